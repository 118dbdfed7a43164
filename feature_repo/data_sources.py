"""Batch sources of the embedded world: parquet tables the adapter derives from the lake.

Paths are relative to the Feast state folder (``<home>/feast``), which the adapter sets as ``repo_path``.
``user_history`` is not the clean log itself: Feast batch sources cannot compute windows, so
``services.features`` derives one row per clean interaction holding the user's last N interactions up to and
including it. In production the adapter binds each source by name to a PostgreSQL table instead.
"""

from feast import FileSource

user_history_source = FileSource(
    name="user_history_source",
    path="data/user_history.parquet",
    timestamp_field="event_timestamp",
    description="One row per clean interaction: the user's last N interactions up to and including it.",
    owner="data@r2ec",
    tags={"derived_from": "lake/interactions"},
)

item_text_source = FileSource(
    name="item_text_source",
    path="data/item_text.parquet",
    timestamp_field="event_timestamp",
    description="The item catalogue, stamped with the catalogue's start time.",
    owner="data@r2ec",
    tags={"derived_from": "data/items.parquet"},
)
