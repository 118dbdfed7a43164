"""Time to build all ML-100k training samples through Feast (point in time) vs the in-memory ``build_samples``.

Run: ``flock /tmp/r2ec-cpu.lock .venv/bin/python -m benchmarks.feast_samples``. The log goes through the real
path (ingest into the lake, ``features.apply``) in a temporary state folder of the embedded world; the two
sample sets must agree exactly (every array, same order, same source rows) or the benchmark fails.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from benchmarks.report import write_results
from r2ec.data.datasets import load_dataset
from r2ec.data.samples import build_samples, catalogue_index
from services import features
from services.datastore import write_dataset
from services.jobs import ingest
from services.lake import read_clean_log
from services.settings import load_settings


def main() -> None:
    interactions, items = load_dataset("ml-100k")
    item_index = catalogue_index(items)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=Path(tmp) / "var", dataset="ml-100k")
        write_dataset(settings, "ml-100k", interactions, items)
        interactions.to_parquet(Path(tmp) / "ml-100k.parquet", index=False)
        assert ingest.run(settings, "ingest", Path(tmp) / "ml-100k.parquet")["rows_clean"] == len(interactions)
        log = read_clean_log(settings)
        features.apply(settings, log, items)

        started = time.perf_counter()
        features.write_sources(settings, log, items)
        sources_s = time.perf_counter() - started
        store = features.feature_store(settings)
        started = time.perf_counter()
        frame = features.training_frame(settings, log, store)
        retrieval_s = time.perf_counter() - started
        started = time.perf_counter()
        feast_samples, feast_rows = features.to_samples(frame, item_index, settings.max_history)
        convert_s = time.perf_counter() - started

    memory_s = []
    for _ in range(3):
        started = time.perf_counter()
        memory_samples, memory_rows = build_samples(interactions, item_index, settings.max_history)
        memory_s.append(time.perf_counter() - started)

    assert np.array_equal(feast_rows, memory_rows)
    for field in fields(memory_samples):
        ours, theirs = getattr(feast_samples, field.name), getattr(memory_samples, field.name)
        assert np.array_equal(ours, theirs, equal_nan=ours.dtype.kind == "f"), field.name  # NaN pads ratings
    feast_total = sources_s + retrieval_s + convert_s
    figures = {
        "interactions": len(interactions),
        "samples": len(memory_samples),
        "max_history": settings.max_history,
        "agree_exactly": True,
        "feast_source_table_s": round(sources_s, 2),
        "feast_historical_retrieval_s": round(retrieval_s, 2),
        "feast_to_samples_s": round(convert_s, 2),
        "feast_total_s": round(feast_total, 2),
        "build_samples_s": round(min(memory_s), 3),
        "feast_over_memory": round(feast_total / min(memory_s), 1),
    }
    notes = [
        "Embedded world: duckdb offline store over parquet, SQLite registry and online store, in a temp folder.",
        "feast_source_table_s derives one user_history row per event (last N items as lists) and writes the parquet "
        "source; feast_historical_retrieval_s is get_historical_features with the r2ec_training service (history "
        "as of each target's sequence time minus 1 µs, plus the target item's text) for every sample.",
        "build_samples_s is the best of 3 runs; Feast figures are from one run (its import and registry costs "
        "excluded). 2-core machine shared with other work: expect large run-to-run variation.",
        "Agreement: every Samples array and the source-row order are identical (np.array_equal).",
    ]
    write_results(
        "feast_samples", "flock /tmp/r2ec-cpu.lock .venv/bin/python -m benchmarks.feast_samples", figures, notes
    )


if __name__ == "__main__":
    main()
