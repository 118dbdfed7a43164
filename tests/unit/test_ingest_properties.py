"""Property of ingest over generated logs (hypothesis): what lands is the file's valid rows as written, once each.

Each field is drawn from spellings whose meaning the test knows (the oracle), so the expected lake is computed
without the service's code: valid rows keep their ids as written, repeats of a normalised event land once,
``rows_in = clean + quarantined + duplicates``, and ingesting the file again, or the same rows in another format
at the same time, lands nothing new.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.jobs import ingest
from services.lake import read_clean_log
from services.settings import Settings
from tests.unit.ingest_helpers import FORMATS, NOW, ingest_settings, write

T1, T2 = pd.Timestamp("2024-05-01T10:00:00Z"), pd.Timestamp("2024-05-02T08:00:00Z")
INVALID = object()  # the row must be quarantined
USERS = {"u1": "u1", "NA": "NA", "null": "null", "7": "7", " u1": INVALID, "u\x001": INVALID, "u\u200b1": INVALID}
ITEMS = {"i1": "i1", "i2": "i2", "nope": INVALID, "i\x001": INVALID, "": INVALID}
TIMES = {
    "2024-05-01T10:00:00Z": T1,
    "2024-05-01T12:00:00+02:00": T1,
    "1714557600": T1,
    "2024-05-02 08:00": T2,
    "2999-01-01T00:00:00Z": INVALID,
    "soon": INVALID,
    "": INVALID,
}
RATINGS = {"4": 4.0, "04": 4.0, "4.0": 4.0, "": None, "NA": INVALID, "9": INVALID}
ROW = st.tuples(*(st.sampled_from(sorted(spellings)) for spellings in (USERS, ITEMS, TIMES, RATINGS)))


def expected(rows: list[tuple[str, str, str, str]]) -> tuple[list[tuple], list[int]]:
    """(events that must land, in order, once each; source rows that must be quarantined)."""
    landed: list[tuple] = []
    bad: list[int] = []
    for position, (user, item, time, rating) in enumerate(rows):
        meaning = (USERS[user], ITEMS[item], TIMES[time], RATINGS[rating])
        if any(value is INVALID for value in meaning):
            bad.append(position)
        elif meaning not in landed:
            landed.append(meaning)
    return landed, bad


def lake_events(world: Settings) -> list[tuple]:
    try:
        log = read_clean_log(world)
    except FileNotFoundError:
        return []
    ratings = [None if pd.isna(r) else r for r in log["rating"]]
    return list(zip(log["user_id"], log["item_id"], log["event_time"], ratings, strict=True))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=25), suffix=st.sampled_from(FORMATS), other=st.sampled_from(FORMATS))
def test_what_lands_is_the_valid_rows_as_written_once(rows: list[tuple], suffix: str, other: str) -> None:
    landed, bad = expected(rows)
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_time", "rating"])
    with tempfile.TemporaryDirectory() as tmp:
        world = ingest_settings(Path(tmp) / "var", ["i1", "i2"])
        path = write(frame, Path(tmp) / f"log{suffix}")
        summary = ingest.run(world, "ingest", path, now=NOW)

        assert summary["rows_in"] == len(rows)
        assert summary["rows_in"] == summary["rows_clean"] + summary["rows_quarantined"] + summary["duplicates_dropped"]
        assert lake_events(world) == landed
        quarantine = pd.read_parquet(summary["quarantine_path"]) if summary["quarantine_path"] else None
        assert (quarantine["source_row"].tolist() if quarantine is not None else []) == bad
        assert ingest.run(world, "ingest", path, now=NOW)["rows_landed"] == 0
        assert lake_events(world) == landed

        fresh = ingest_settings(Path(tmp) / "fresh", ["i1", "i2"])
        copy = write(frame, Path(tmp) / f"copy{other}")
        with ThreadPoolExecutor(2) as pool:  # the same rows from two files at once land once
            runs = list(pool.map(lambda p: ingest.run(fresh, "ingest", p, now=NOW), [path, copy]))
        assert sum(run["rows_landed"] for run in runs) == len(landed)
        assert sorted(lake_events(fresh), key=repr) == sorted(landed, key=repr)
