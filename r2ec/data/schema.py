"""The two canonical tables every loader produces and every later stage reads.

interactions: ``user_id`` (str), ``item_id`` (str), ``event_time`` (datetime64[ns, UTC]),
``rating`` (float64, NaN when the log has none). Row order is the log's original order, which breaks
ties in time everywhere downstream.

items: ``item_id`` (str, unique), ``title`` (str), and optional ``genres`` (str), ``year`` (Int64),
``description`` (str). Extra columns are kept.
"""

from __future__ import annotations

import pandas as pd

INTERACTION_COLUMNS = ("user_id", "item_id", "event_time", "rating")
ITEM_COLUMNS = ("item_id", "title")
OPTIONAL_ITEM_COLUMNS = ("genres", "year", "description")


class SchemaError(ValueError):
    """A table does not have the canonical shape; the message says what is wrong."""


def canonical_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a frame with the interaction columns to canonical dtypes, keeping row order."""
    missing = [c for c in INTERACTION_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"interactions lack column(s): {', '.join(missing)}")
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype(str),
            "item_id": frame["item_id"].astype(str),
            "event_time": pd.to_datetime(frame["event_time"], utc=True),
            "rating": pd.to_numeric(frame["rating"], errors="coerce").astype("float64"),
        }
    )
    return out.reset_index(drop=True)


def canonical_items(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a catalogue frame to canonical dtypes; item ids must be unique."""
    missing = [c for c in ITEM_COLUMNS if c not in frame.columns]
    if missing:
        raise SchemaError(f"items lack column(s): {', '.join(missing)}")
    out = frame.copy()
    out["item_id"] = out["item_id"].astype(str)
    out["title"] = out["title"].fillna("").astype(str)
    if "year" in out.columns:
        out["year"] = pd.to_numeric(out["year"], errors="coerce").astype("Int64")
    for column in ("genres", "description"):
        if column in out.columns:
            out[column] = out[column].astype("string")
    duplicated = out["item_id"].duplicated()
    if duplicated.any():
        raise SchemaError(f"items have {int(duplicated.sum())} duplicate item_id(s)")
    return out.reset_index(drop=True)
