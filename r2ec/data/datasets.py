"""Named datasets the service knows how to load into the canonical schema."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pandas as pd

from r2ec.data.amazon import load_amazon_reviews
from r2ec.data.movielens import DatasetUnavailable, load_movielens_100k
from r2ec.data.synthetic import generate_synthetic

Loader = Callable[..., tuple[pd.DataFrame, pd.DataFrame]]

# Keyword options of a loader come from the caller (e.g. ``amazon`` needs ``reviews=`` and ``meta=`` paths).
LOADERS: dict[str, Loader] = {
    "ml-100k": load_movielens_100k,
    "synthetic": generate_synthetic,
    "amazon": load_amazon_reviews,
}


def load_dataset(name: str, **options: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) of a known dataset; raises DatasetUnavailable with the known names."""
    if name not in LOADERS:
        raise DatasetUnavailable(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}")
    loader = LOADERS[name]
    try:
        inspect.signature(loader).bind(**options)
    except TypeError as error:
        raise DatasetUnavailable(f"dataset {name!r}: {error}") from None
    return loader(**options)
