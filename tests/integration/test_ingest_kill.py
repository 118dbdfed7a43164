"""Ingest under kill -9 and under concurrency, as separate processes running ``r2ec ingest``.

A batch is all or nothing for readers (``read_clean_log``, which Feast and sample building use): an ingest killed
at any point leaves nothing visible, and the next ingest, of any file, removes what it left. Two ingests of the
same events at the same time land them once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.lake import clean_dir, landed_batches, read_clean_log
from services.settings import Settings
from tests.unit.ingest_helpers import ingest_settings, write

ITEMS = [f"i{i}" for i in range(500)]
ROOT = Path(__file__).resolve().parents[2]


def log(rows: int, days: int, seed: int) -> pd.DataFrame:
    """``rows`` distinct valid events over ``days`` days of 2024 (one partition per day), 1 % unknown items."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC").value // 10**9
    frame = pd.DataFrame(
        {
            "user_id": [f"u{seed}-{i}" for i in range(rows)],
            "item_id": rng.choice(ITEMS, rows),
            "event_time": (start + rng.integers(0, days * 86_400, rows)).astype(str),
            "rating": rng.integers(1, 6, rows).astype(str),
        }
    )
    frame.loc[rng.choice(rows, rows // 100, replace=False), "item_id"] = "unknown"
    return frame


def ingest(settings: Settings, path: Path) -> subprocess.Popen:
    env = {**os.environ, "R2EC_HOME": str(settings.root), "R2EC_INGEST_MAX_BAD_FRACTION": "0.05"}
    command = [sys.executable, "-m", "services.cli", "ingest", str(path), "--json"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def visible_rows(settings: Settings) -> int:
    try:
        return len(read_clean_log(settings))
    except FileNotFoundError:
        return 0


def leftovers(settings: Settings) -> list[Path]:
    """Files on disk that belong to no landed batch (or are temporary)."""
    lake = settings.lake_dir()
    landed = landed_batches(settings)
    files = [p for p in lake.rglob("*") if p.is_file() and p.parent.name != "batches"]
    return [p for p in files if p.name.endswith(".tmp") or p.stem not in landed]


def kill_when(process: subprocess.Popen, ready: callable, settings: Settings, whole: int) -> bool:
    """SIGKILL ``process`` once ``ready()``; meanwhile readers must see nothing or the whole batch. True when the
    kill came before the process ended."""
    while process.poll() is None and not ready():
        assert visible_rows(settings) in (0, whole)
        time.sleep(0.002)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return killed


def test_a_killed_ingest_is_invisible_and_the_next_ingest_cleans_up(tmp_path: Path) -> None:
    settings = ingest_settings(tmp_path / "var", ITEMS)
    big = write(log(60_000, days=240, seed=1), tmp_path / "big.csv")
    whole = 60_000 - 600
    partitions = lambda: list(clean_dir(settings).glob("day=*/*.parquet"))  # noqa: E731
    started = time.monotonic()
    points = {
        "validating": lambda: time.monotonic() - started > 2.0,
        "first partition": lambda: len(partitions()) >= 1,
        "half the partitions": lambda: len(partitions()) >= 120,
        "every partition": lambda: len(partitions()) >= 240,
    }
    killed, landed = [], False
    for name, ready in points.items():
        started = time.monotonic()
        killed += [name] if kill_when(ingest(settings, big), ready, settings, whole) else []
        visible = visible_rows(settings)
        assert visible in (0, whole), f"killed at {name}: part of the batch is visible"
        assert bool(landed_batches(settings)) == (visible == whole)
        if landed := visible == whole:  # killed after its manifest: the batch is whole, nothing to repeat
            break
    assert {"first partition", "half the partitions"} <= set(killed), killed
    assert leftovers(settings) or landed  # the kills did leave files behind

    other = ingest(settings, write(log(200, days=3, seed=2), tmp_path / "other.csv"))
    assert other.wait() == 0, other.stderr.read()
    assert leftovers(settings) == [] and visible_rows(settings) == 200 - 2 + whole * landed  # another file cleaned up

    again = ingest(settings, big)
    assert again.wait() == 0, again.stderr.read()
    assert json.loads(again.stdout.read())["rows_landed"] == (0 if landed else whole)
    assert visible_rows(settings) == whole + 198 and leftovers(settings) == []


@pytest.mark.parametrize("formats", [(".csv", ".jsonl"), (".csv", ".csv")])
def test_concurrent_ingests_of_the_same_events_land_them_once(tmp_path: Path, formats: tuple[str, str]) -> None:
    settings = ingest_settings(tmp_path / "var", ITEMS)
    events = log(20_000, days=30, seed=3)
    paths = [write(events, tmp_path / f"export{n}{suffix}") for n, suffix in enumerate(formats)]
    runs = [ingest(settings, path) for path in paths]
    summaries = []
    for run in runs:
        out, err = run.communicate()
        assert run.returncode == 0, err
        summaries.append(json.loads(out))

    clean = 20_000 - 200
    assert visible_rows(settings) == clean
    assert sorted(s["rows_landed"] for s in summaries) == [0, clean]
    assert read_clean_log(settings)[["user_id", "item_id", "event_time"]].duplicated().sum() == 0
