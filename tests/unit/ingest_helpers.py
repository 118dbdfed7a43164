"""Helpers for tests of ingest: a state folder with a tiny catalogue, log files in each format."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from services.datastore import write_dataset
from services.settings import Settings, load_settings

NOW = datetime(2024, 6, 1, tzinfo=UTC)
FORMATS = (".csv", ".jsonl", ".parquet")


def ingest_settings(home: Path, items: list[str], **overrides: object) -> Settings:
    """Settings under ``home`` whose dataset is prepared with the catalogue ``items`` (no interactions)."""
    settings = load_settings(home=home, **{"ingest_max_bad_fraction": 1.0, **overrides})
    catalogue = pd.DataFrame({"item_id": items, "title": [f"title {i}" for i in items]})
    write_dataset(
        settings, settings.dataset, pd.DataFrame(columns=["user_id", "item_id", "event_time", "rating"]), catalogue
    )
    return settings


def write(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as a CSV, JSON-lines or parquet file, by the suffix of ``path``."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path
