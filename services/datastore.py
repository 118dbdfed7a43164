"""The canonical parquet tables of each dataset under the state folder (the embedded 'lake')."""

from __future__ import annotations

import pandas as pd

from r2ec.data.movielens import DatasetUnavailable
from r2ec.data.samples import PreparedData, prepare
from r2ec.data.schema import canonical_interactions, canonical_items
from services.lake import write_parquet_atomic
from services.settings import Settings


def write_dataset(settings: Settings, name: str, interactions: pd.DataFrame, items: pd.DataFrame) -> None:
    """Store the canonical tables, each written atomically."""
    folder = settings.data_dir(name)
    for table, frame in (("interactions", interactions), ("items", items)):
        write_parquet_atomic(frame, folder / f"{table}.parquet")


def read_dataset(settings: Settings, name: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical (interactions, items) of a prepared dataset."""
    name = name or settings.dataset
    folder = settings.data_dir(name)
    if not (folder / "interactions.parquet").exists():
        raise DatasetUnavailable(f"dataset {name!r} is not prepared: run `r2ec data prepare --dataset {name}`")
    return (
        canonical_interactions(pd.read_parquet(folder / "interactions.parquet")),
        canonical_items(pd.read_parquet(folder / "items.parquet")),
    )


def load_prepared(settings: Settings, name: str | None = None) -> PreparedData:
    """Samples and splits of a prepared dataset, with the configured history length."""
    name = name or settings.dataset
    interactions, items = read_dataset(settings, name)
    return prepare(name, interactions, items, settings.max_history)
