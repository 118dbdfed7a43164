"""Job: load a named dataset into canonical parquet tables and report its statistics."""

from __future__ import annotations

from typing import Any

from r2ec.data.datasets import load_dataset
from r2ec.data.samples import prepare
from services.datastore import write_dataset
from services.settings import Settings


def run(settings: Settings, run_id: str, dataset: str | None = None, **sources: Any) -> dict[str, Any]:
    """Write ``var/data/<dataset>/{interactions,items}.parquet``; return counts of the log and the split.

    ``sources`` are the loader's options, e.g. ``reviews=`` and ``meta=`` file paths for ``amazon``.
    """
    name = dataset or settings.dataset
    interactions, items = load_dataset(name, **sources)
    write_dataset(settings, name, interactions, items)
    data = prepare(name, interactions, items, settings.max_history)
    return {
        "run_id": run_id,
        "dataset": name,
        "path": str(settings.data_dir(name)),
        "users": int(interactions["user_id"].nunique()),
        "items": len(items),
        "interactions": len(interactions),
        "first_event": str(interactions["event_time"].min()),
        "last_event": str(interactions["event_time"].max()),
        "samples": len(data.train) + len(data.valid) + len(data.test),
        "train": len(data.train),
        "valid": len(data.valid),
        "test": len(data.test),
        "test_cold": int(data.test.cold.sum()),
    }
