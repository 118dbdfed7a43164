"""Validation of interaction logs: each kind of bad row, reconciliation, refusal, formats, idempotent re-ingest."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from services.cli import main
from services.datastore import write_dataset
from services.jobs import ingest
from services.lake import clean_dir, read_clean_log
from services.settings import Settings, load_settings
from tests.unit.ingest_helpers import NOW, ingest_settings, write

LONG_ID = "u" * 200
GOOD = [
    # source_row 0..3: clean (row 3 has control characters in its review)
    {"user_id": "u1", "item_id": "i1", "event_time": "2024-05-01T10:00:00Z", "rating": "4", "review": "fine"},
    {"user_id": "u1", "item_id": "i2", "event_time": "2024-05-02T10:00:00Z", "rating": "", "review": ""},
    {"user_id": "u2", "item_id": "i3", "event_time": "1714557600", "rating": "5.0", "review": "x" * 50},
    {"user_id": "u3", "item_id": "i1", "event_time": "2024-05-03 08:00", "rating": "1", "review": "a\x1bb\u202ec"},
]
BAD = [  # (row, expected reasons); source_row = 4 + position
    ({"user_id": "", "item_id": "i1", "event_time": "2024-05-01T10:00:00Z", "rating": "3"}, ["user_id missing"]),
    ({"user_id": "u4", "item_id": "", "event_time": "2024-05-01T10:00:00Z", "rating": "3"}, ["item_id missing"]),
    ({"user_id": "u4", "item_id": "nope", "event_time": "2024-05-01T10:00:00Z", "rating": "3"}, ["item_id unknown"]),
    ({"user_id": LONG_ID, "item_id": "i1", "event_time": "2024-05-01T10:00:00Z", "rating": "3"}, ["user_id too long"]),
    ({"user_id": "u4", "item_id": "i1", "event_time": "", "rating": "3"}, ["event_time missing"]),
    ({"user_id": "u4", "item_id": "i1", "event_time": "yesterday", "rating": "3"}, ["event_time unparseable"]),
    (
        {"user_id": "u4", "item_id": "i1", "event_time": "2024-06-03T00:00:00Z", "rating": "3"},
        ["event_time in the future"],
    ),
    (
        {"user_id": "u4", "item_id": "i1", "event_time": "1985-01-01T00:00:00Z", "rating": "3"},
        ["event_time before catalogue start"],
    ),
    (
        {"user_id": "u4", "item_id": "i1", "event_time": "2024-05-01T10:00:00Z", "rating": "nine"},
        ["rating not a number"],
    ),
    ({"user_id": "u4", "item_id": "i1", "event_time": "2024-05-01T10:00:00Z", "rating": "7"}, ["rating out of scale"]),
    (
        {"user_id": "u4", "item_id": "nope", "event_time": "2024-05-01T10:00:00Z", "rating": "0"},
        ["item_id unknown", "rating out of scale"],
    ),
    (
        {"user_id": "u\x073", "item_id": "i1", "event_time": "2024-05-01T10:00:00Z", "rating": "3"},
        ["user_id has control, invisible or surrounding space characters"],
    ),
]
DUPLICATE = GOOD[0]  # source_row 16: an exact copy of row 0


def log_frame() -> pd.DataFrame:
    rows = [*GOOD, *(row for row, _ in BAD), DUPLICATE]
    return pd.DataFrame(rows).fillna("")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return ingest_settings(tmp_path / "var", ["i1", "i2", "i3"], text_max_chars=20, id_max_chars=64)


def test_each_bad_row_is_quarantined_with_its_reasons(settings: Settings, tmp_path: Path) -> None:
    summary = ingest.run(settings, "ingest", write(log_frame(), tmp_path / "log.csv"), now=NOW)

    assert summary["accepted"] is True
    assert summary["rows_in"] == 17
    assert (summary["rows_clean"], summary["rows_quarantined"], summary["duplicates_dropped"]) == (4, 12, 1)
    assert summary["rows_in"] == summary["rows_clean"] + summary["rows_quarantined"] + summary["duplicates_dropped"]
    quarantine = pd.read_parquet(summary["quarantine_path"]).set_index("source_row")
    for position, (_, reasons) in enumerate(BAD):
        assert list(quarantine.loc[4 + position, "reasons"]) == reasons
    expected_counts: dict[str, int] = {}
    for _, reasons in BAD:
        for reason in reasons:
            expected_counts[reason] = expected_counts.get(reason, 0) + 1
    assert summary["reasons"] == expected_counts
    assert quarantine.loc[9, "event_time"] == "yesterday"  # quarantine keeps what came in

    clean = read_clean_log(settings)
    assert clean["source_row"].tolist() == [0, 1, 2, 3]
    assert clean["user_id"].tolist() == ["u1", "u1", "u2", "u3"]
    assert clean.loc[3, "review"] == "abc"  # control characters stripped from free text
    assert clean.loc[2, "review"] == "x" * 20  # free text capped at text_max_chars
    assert pd.isna(clean.loc[1, "rating"])  # a null rating is valid
    assert clean.loc[2, "event_time"] == pd.Timestamp("2024-05-01T10:00:00Z")  # epoch seconds parsed
    days = sorted(p.name for p in clean_dir(settings).iterdir())
    assert days == ["day=2024-05-01", "day=2024-05-02", "day=2024-05-03"]


def test_reingest_lands_nothing_new(settings: Settings, tmp_path: Path) -> None:
    path = write(log_frame(), tmp_path / "log.csv")
    first = ingest.run(settings, "ingest", path, now=NOW)
    again = ingest.run(settings, "ingest", path, now=NOW)
    assert again["already_ingested"] is True and again["rows_landed"] == 0 and first["rows_landed"] == 4
    changed = {"already_ingested", "rows_landed", "days", "message", "seconds"}
    assert {k: v for k, v in again.items() if k not in changed} == {k: v for k, v in first.items() if k not in changed}
    assert len(read_clean_log(settings)) == 4

    copy = ingest.run(
        settings, "ingest", write(log_frame(), tmp_path / "copy.parquet"), now=NOW
    )  # other bytes, same rows
    assert copy["batch"] != first["batch"]
    assert copy["rows_clean"] == 0 and copy["duplicates_dropped"] == 1 + 4
    assert len(read_clean_log(settings)) == 4


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_formats_agree_with_csv(settings: Settings, tmp_path: Path, suffix: str) -> None:
    csv = ingest.run(settings, "ingest", write(log_frame(), tmp_path / "log.csv"), dataset=None, now=NOW)
    other_settings = load_settings(home=tmp_path / "other", ingest_max_bad_fraction=1.0, text_max_chars=20)
    write_dataset(other_settings, other_settings.dataset, *_catalogue_of(settings))
    other = ingest.run(other_settings, "ingest", write(log_frame(), tmp_path / f"log{suffix}"), now=NOW)
    keys = ("rows_in", "rows_clean", "rows_quarantined", "duplicates_dropped", "reasons")
    assert {k: other[k] for k in keys} == {k: csv[k] for k in keys}
    columns = ["user_id", "item_id", "event_time", "rating", "source_row"]
    pd.testing.assert_frame_equal(read_clean_log(other_settings)[columns], read_clean_log(settings)[columns])


def _catalogue_of(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = settings.data_dir()
    return pd.read_parquet(folder / "interactions.parquet"), pd.read_parquet(folder / "items.parquet")


def test_refused_batch_lands_nothing(tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture) -> None:
    path = write(log_frame(), tmp_path / "log.csv")
    home = str(settings.root)
    code = main(["--home", home, "ingest", str(path), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    summary = json.loads(captured.out)
    assert summary["accepted"] is False and summary["quarantine_path"] is None
    assert captured.err.startswith("r2ec: refused: ") and "above the threshold of 5.0%" in captured.err
    assert not settings.lake_dir().exists()


def test_accepted_ingest_via_cli(tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture) -> None:
    path = write(pd.DataFrame(GOOD), tmp_path / "good.jsonl")
    assert main(["--home", str(settings.root), "ingest", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accepted"] is True and summary["rows_clean"] == 4
    assert set(summary) >= {"rows_in", "rows_quarantined", "duplicates_dropped", "reasons", "quarantine_path"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("latin1.csv", "user_id,item_id,event_time,rating\nJos\xe9,i1,2024-05-01,3\n".encode("latin-1"), "not UTF-8"),
        ("nocol.csv", b"user_id,item_id,event_time\nu1,i1,2024-05-01\n", "missing required column(s): rating"),
        ("broken.parquet", b"PAR1 this is not parquet", "unreadable parquet file"),
        ("broken.jsonl", b'{"user_id": "u1", "item_id": \n', "unreadable jsonl file"),
        ("empty.csv", b"", "empty file"),
        ("log.xlsx", b"whatever", "unsupported file type"),
    ],
)
def test_unusable_input_is_one_error_line(
    tmp_path: Path, settings: Settings, capsys: pytest.CaptureFixture, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["--home", str(settings.root), "ingest", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("r2ec: error: ") and message in err
    assert not settings.lake_dir().exists()
