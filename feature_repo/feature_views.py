"""Feature views: what the model reads about a user (history) and about an item (text)."""

from datetime import timedelta

from data_sources import item_text_source, user_history_source
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String

user_history = FeatureView(
    name="user_history",
    entities=[user],
    # A history stays the user's history however old it is; ten years only bounds the point-in-time scan.
    ttl=timedelta(days=3650),
    schema=[
        Field(name="history_item_ids", dtype=Array(String), description="Last N item ids, oldest first."),
        Field(name="history_ratings", dtype=Array(Float32), description="Their ratings, NaN where the log had none."),
        Field(name="history_times", dtype=Array(Int64), description="Their event times, seconds since epoch."),
        Field(name="history_length", dtype=Int64, description="Number of items in the lists (<= N)."),
    ],
    source=user_history_source,
    online=True,
    description="A user's last N interactions as of each of their events (point-in-time).",
    owner="data@r2ec",
    tags={"team": "r2ec", "pii": "false"},
)

item_text = FeatureView(
    name="item_text",
    entities=[item],
    ttl=timedelta(0),  # zero = never expires: the catalogue row is valid from the catalogue's start onwards
    schema=[
        Field(name="title", dtype=String, description="Item title, control characters stripped."),
        Field(name="genres", dtype=String, description="Comma-separated genres or empty."),
        Field(name="year", dtype=Int64, description="Release year, missing when unknown."),
        Field(name="description", dtype=String, description="Free-text description or empty."),
    ],
    source=item_text_source,
    online=True,
    description="Text attributes of each catalogue item, the input of the item tower.",
    owner="data@r2ec",
    tags={"team": "r2ec"},
)
