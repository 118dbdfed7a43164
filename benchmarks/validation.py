"""Validation throughput on one million synthetic interaction rows (1 % bad, 0.5 % exact duplicates).

Run: ``flock /tmp/r2ec-cpu.lock .venv/bin/python -m benchmarks.validation [--rows N]``. Reports the GE
validation step alone and the whole ingest (read CSV, sanitize, validate, land parquet by day).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import write_results
from services.datastore import write_dataset
from services.jobs import ingest
from services.settings import load_settings
from services.validation import Policy, read_log, validate

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def synthetic_log(rows: int, items: int, seed: int = 0) -> pd.DataFrame:
    """A log over 2023 with 1 % of rows broken in one of five ways, then 0.5 % exact duplicates of random rows."""
    rng = np.random.default_rng(seed)
    unique = rows - rows // 200
    seconds = rng.integers(pd.Timestamp("2023-01-01").value, pd.Timestamp("2024-01-01").value, unique) // 10**9
    frame = pd.DataFrame(
        {
            "user_id": np.char.add("u", rng.integers(0, rows // 50, unique).astype(str)),
            "item_id": np.char.add("i", rng.integers(0, items, unique).astype(str)),
            "event_time": pd.to_datetime(seconds, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "rating": rng.integers(1, 6, unique).astype(str),
        }
    )
    kinds = np.array_split(rng.choice(unique, rows // 100, replace=False), 5)
    frame.loc[kinds[0], "item_id"] = "unknown"
    frame.loc[kinds[1], "user_id"] = ""
    frame.loc[kinds[2], "event_time"] = "not a time"
    frame.loc[kinds[3], "event_time"] = "2031-01-01T00:00:00Z"
    frame.loc[kinds[4], "rating"] = "11"
    return pd.concat([frame, frame.iloc[rng.choice(unique, rows - unique, replace=False)]], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=Path(tmp) / "var")
        catalogue = pd.DataFrame({"item_id": [f"i{i}" for i in range(20_000)], "title": "t"})
        write_dataset(
            settings, settings.dataset, pd.DataFrame(columns=["user_id", "item_id", "event_time", "rating"]), catalogue
        )
        path = Path(tmp) / "log.csv"
        synthetic_log(args.rows, len(catalogue)).to_csv(path, index=False)

        policy = Policy.from_settings(settings, NOW)
        validate(read_log(path).head(100), policy, catalogue["item_id"].tolist())  # import GE first
        started = time.perf_counter()
        raw = read_log(path)
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        outcome = validate(raw, policy, catalogue["item_id"].tolist())
        validate_s = time.perf_counter() - started
        started = time.perf_counter()
        summary = ingest.run(settings, "ingest", path, now=NOW)
        ingest_s = time.perf_counter() - started

    assert summary["rows_in"] == summary["rows_clean"] + summary["rows_quarantined"] + summary["duplicates_dropped"]
    figures = {
        "rows": args.rows,
        "rows_clean": summary["rows_clean"],
        "rows_quarantined": summary["rows_quarantined"],
        "duplicates_dropped": summary["duplicates_dropped"],
        "read_csv_s": round(read_s, 2),
        "sanitize_and_validate_s": round(validate_s, 2),
        "validation_rows_per_s": int(args.rows / validate_s),
        "ingest_end_to_end_s": round(ingest_s, 2),
        "ingest_rows_per_s": int(args.rows / ingest_s),
        **{f"ingest_{step}_s": round(value, 2) for step, value in summary["seconds"].items()},
    }
    assert outcome.reasons == summary["reasons"]
    command = "flock /tmp/r2ec-cpu.lock .venv/bin/python -m benchmarks.validation" + (
        f" --rows {args.rows}" if args.rows != 1_000_000 else ""
    )
    notes = [
        f"Synthetic CSV: 20,000 catalogue items, {args.rows // 50:,} users over 2023; 1 % bad rows (unknown item, "
        "empty user, unparseable time, future time, rating out of scale), 0.5 % exact duplicates.",
        "sanitize_and_validate = turning each field into its text, parsing times and ratings, the GE checkpoint run "
        "(result_format COMPLETE) and the verdict (quarantine with reasons, duplicates of the normalised event) on an "
        "in-memory frame; ingest_end_to_end adds reading the CSV (pyarrow), hashing the file, and, under the "
        "dataset's lock, the check against landed rows, the parquet partitions by day, the quarantine file and the "
        "manifest. ingest_<step>_s: the summary's own timings of that run (read, sanitize, expectations, verdict, "
        "land).",
        "One run (GE imported beforehand) on a 2-core machine shared with other work; timings vary between runs.",
        "Exact copies of bad rows are quarantined like their originals (only clean rows are deduplicated, on the "
        "normalised event), so quarantined + duplicates split ~50 rows differently from runs before issue 27.",
        "Where the time goes (cProfile of validate on 100k rows, and the step timings above): the GE checkpoint is "
        "~60 % of validation: 16 expectations, each several metrics; the 6 with a row_condition make pandas "
        "`query` copy the filtered frame once per metric (~30 copies a run, a quarter of GE's time) and planning "
        "costs ~0.15 s a run. Sanitizing is ~35 %: parsing times (epoch attempt, then ISO-8601 with zoned and naive "
        "times apart) and regex scans over object strings. Landing is mostly pandas -> arrow conversion and one "
        "parquet write per day (365 here); reading the CSV with pyarrow is under 1 s.",
        "The 200k rows/s goal is not reached; next steps in that order: convert clean rows to arrow once and "
        "write day slices of it, give GE precomputed flags instead of row_condition expectations, keep strings "
        "as pyarrow strings for the regex scans.",
        f"Reasons: {summary['reasons']}",
    ]
    write_results("validation", command, figures, notes)


if __name__ == "__main__":
    main()
