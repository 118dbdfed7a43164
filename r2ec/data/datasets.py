"""Named datasets the service knows how to load into the canonical schema."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from r2ec.data.movielens import DatasetUnavailable, load_movielens_100k

Loader = Callable[[], tuple[pd.DataFrame, pd.DataFrame]]

LOADERS: dict[str, Loader] = {"ml-100k": load_movielens_100k}


def load_dataset(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) of a known dataset; raises DatasetUnavailable with the known names."""
    if name not in LOADERS:
        raise DatasetUnavailable(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[name]()
