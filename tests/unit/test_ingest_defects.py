"""Ingest never lands a wrong row (issue 27): ids as written, one event once, unusable files refused in one line.

Each test is one class of defect, on CSV, JSON lines and parquet where the class applies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.cli import main
from services.jobs import ingest
from services.lake import read_clean_log
from services.settings import Settings
from tests.unit.ingest_helpers import FORMATS, NOW, ingest_settings, write

ITEMS = ["i1", "i2", "1", "7", "123"]
TIME = "2024-05-01T10:00:00Z"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return ingest_settings(tmp_path / "var", ITEMS)


def rows(*pairs: tuple[object, object], time: object = TIME, rating: object = "4") -> list[dict[str, object]]:
    return [{"user_id": u, "item_id": i, "event_time": time, "rating": rating} for u, i in pairs]


def jsonl(records: list[dict[str, object]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def landed(settings: Settings) -> list[tuple[str, str]]:
    try:
        log = read_clean_log(settings)
    except FileNotFoundError:
        return []
    return list(zip(log["user_id"], log["item_id"], strict=True))


def quarantined(summary: dict) -> dict[str, list[str]]:
    """user_id as written -> reasons, from the batch's quarantine file."""
    frame = pd.read_parquet(summary["quarantine_path"])
    return {f"{u}|{i}": list(r) for u, i, r in zip(frame["user_id"], frame["item_id"], frame["reasons"], strict=True)}


def run_cli(settings: Settings, *args: str) -> int:
    return main(["--home", str(settings.root), *args])


# ------------------------------------------------------------------------------------- ids rewritten

UNKEPT = ["u\x001", "u\u200b1", "u\x071", "u\x7f1", " u1", "u1 ", "u\u202e1"]


@pytest.mark.parametrize("suffix", FORMATS)
def test_an_id_the_service_cannot_keep_is_quarantined_never_altered(
    settings: Settings, tmp_path: Path, suffix: str
) -> None:
    log = pd.DataFrame(rows(("u1", "i1"), *((u, "i2") for u in UNKEPT), ("u2", "1\x00999"), ("u3", "1\x0023")))
    summary = ingest.run(settings, "ingest", write(log, tmp_path / f"log{suffix}"), now=NOW)

    assert landed(settings) == [("u1", "i1")]
    reasons = quarantined(summary)
    for user in UNKEPT:
        assert reasons[f"{user}|i2"] == ["user_id has control, invisible or surrounding space characters"]
    for key in ("u2|1\x00999", "u3|1\x0023"):
        assert "item_id has control, invisible or surrounding space characters" in reasons[key]


# -------------------------------------------------------------------------------- ids that are not strings


def test_jsonl_integer_ids_are_ids_and_non_scalars_are_bad_rows(settings: Settings, tmp_path: Path) -> None:
    good = rows((7, 7), ("u1", 123), (8, 1), time=1714557600, rating=4)
    bad = rows(({"a": 1}, "i1"), ([1, 2], "i1"), (True, "i1"), (7.5, "i1"), ("u2", False), ("u3", {"id": "i1"}))
    missing = rows((9, None))  # a missing item makes pandas read the column as floats: 7 must stay "7"
    summary = ingest.run(settings, "ingest", jsonl([*good, *bad, *missing], tmp_path / "log.jsonl"), now=NOW)

    assert landed(settings) == [("7", "7"), ("u1", "123"), ("8", "1")]
    reasons = quarantined(summary)
    assert reasons == {
        '{"a": 1}|i1': ["user_id not a string or integer"],
        "[1, 2]|i1": ["user_id not a string or integer"],
        "true|i1": ["user_id not a string or integer"],
        "7.5|i1": ["user_id not a string or integer"],
        "u2|false": ["item_id not a string or integer"],
        'u3|{"id": "i1"}': ["item_id not a string or integer"],
        "9|<NA>": ["item_id missing"],
    }


def test_parquet_integer_and_integral_float_ids_are_ids(settings: Settings, tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_id": pa.array([7, 8, 9], pa.int64()),
            "item_id": pa.array([7.0, 123.0, 1.5], pa.float64()),
            "event_time": [TIME] * 3,
            "rating": pa.array([4, 5, 3], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "log.parquet")
    summary = ingest.run(settings, "ingest", tmp_path / "log.parquet", now=NOW)

    assert landed(settings) == [("7", "7"), ("8", "123")]
    assert quarantined(summary) == {"9|1.5": ["item_id not a string or integer"]}
    flags = pa.table({"user_id": [True], "item_id": ["i1"], "event_time": [TIME], "rating": [4]})
    pq.write_table(flags, tmp_path / "flags.parquet")
    assert quarantined(ingest.run(settings, "ingest", tmp_path / "flags.parquet", now=NOW)) == {
        "True|i1": ["user_id not a string or integer"]
    }


# ------------------------------------------------------------------------ strings that look like missing

NA_LIKE = ["NA", "N/A", "n/a", "null", "NULL", "None", "nan", "NaN", "-nan", "#N/A", "<NA>", "-"]


def test_csv_strings_that_look_missing_are_ids_as_written(settings: Settings, tmp_path: Path) -> None:
    log = pd.DataFrame(rows(*((u, "i1") for u in NA_LIKE)))
    summary = ingest.run(settings, "ingest", write(log, tmp_path / "log.csv"), now=NOW)

    assert summary["rows_clean"] == len(NA_LIKE) and summary["rows_quarantined"] == 0
    assert [user for user, _ in landed(settings)] == NA_LIKE
    path = tmp_path / "rating.csv"
    path.write_text(f"user_id,item_id,event_time,rating\nu1,i2,{TIME},NA\nu1,i1,{TIME},\n")
    summary = ingest.run(settings, "ingest", path, now=NOW)
    assert summary["reasons"] == {"rating not a number": 1}  # NA is not a number; only the empty field is missing


# --------------------------------------------------------------------------- one event, several spellings

SPELLINGS = [  # the same event: 2024-05-01 10:00 UTC, rating 4 (a zoned time first: pandas then misreads naive ones)
    ("2024-05-01T12:00:00+02:00", "4"),
    ("2024-05-01 10:00:00", "04"),
    (TIME, "4.0"),
    ("1714557600", " 4"),
    (" 2024-05-01T10:00:00Z ", "4e0"),
    ("2024-05-01T05:00:00.000-05:00", "+4"),
    ("2024-05-01T10:00", "4"),
]


@pytest.mark.parametrize("suffix", FORMATS)
def test_one_event_spelled_several_ways_lands_once(settings: Settings, tmp_path: Path, suffix: str) -> None:
    log = pd.DataFrame([{"user_id": "u1", "item_id": "i1", "event_time": t, "rating": r} for t, r in SPELLINGS])
    summary = ingest.run(settings, "ingest", write(log, tmp_path / f"log{suffix}"), now=NOW)

    assert (summary["rows_clean"], summary["duplicates_dropped"]) == (1, len(SPELLINGS) - 1)
    clean = read_clean_log(settings)
    assert clean["event_time"].tolist() == [pd.Timestamp(TIME)] and clean["rating"].tolist() == [4.0]


def test_jsonl_numbers_are_the_same_event_as_csv_text(settings: Settings, tmp_path: Path) -> None:
    first = ingest.run(settings, "ingest", write(pd.DataFrame(rows(("u1", "i1"))), tmp_path / "a.csv"), now=NOW)
    again = ingest.run(settings, "ingest", jsonl(rows(("u1", "i1"), time=1714557600, rating=4.0), tmp_path / "b.jsonl"))

    assert first["rows_landed"] == 1
    assert (again["rows_clean"], again["duplicates_dropped"], again["rows_landed"]) == (0, 1, 0)
    assert landed(settings) == [("u1", "i1")]


# ---------------------------------------------------------------------------- rows with the wrong field count

HEADER = "user_id,item_id,event_time,rating\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"u1,i1,{TIME},4\nu2,i1,{TIME},4,5\n", "line 3 has 5 field(s) where the header has 4"),
        (f"u1,i1,{TIME},4\nu2,i1,{TIME}\n", "line 3 has 3 field(s) where the header has 4"),
        (f"u1,i1,{TIME},4,x\nu2,i1,{TIME},4,y\n", "line 2 has 5 field(s) where the header has 4"),
        (f"u1,i1,{TIME},4\r5\nu2,i1,{TIME},4\n", "line 2 holds a bare carriage return"),
        (f"u1,i\r1,{TIME},4\n", "line 2 holds a bare carriage return"),
    ],
)
def test_csv_rows_with_the_wrong_field_count_make_the_file_unusable(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture, body: str, message: str
) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes((HEADER + body).encode())
    assert run_cli(settings, "ingest", str(path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"r2ec: error: {path}: ") and message in err
    assert landed(settings) == []


def test_crlf_line_ends_and_quoted_line_breaks_are_fine(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(f'user_id,item_id,event_time,rating,review\r\nu1,i1,{TIME},4,"two\r\nlines"\r\n'.encode())
    summary = ingest.run(settings, "ingest", path, now=NOW)
    assert summary["rows_clean"] == 1 and landed(settings) == [("u1", "i1")]


# ------------------------------------------------------------------------------- unclear words, tracebacks


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_far_future_year_is_in_the_future(settings: Settings, tmp_path: Path, suffix: str) -> None:
    times = ["2999-01-01T00:00:00Z", "32503680000", "+12024-01-01", "0900-01-01"]
    log = pd.DataFrame([{"user_id": "u1", "item_id": "i1", "event_time": t, "rating": "4"} for t in times])
    summary = ingest.run(settings, "ingest", write(log, tmp_path / f"log{suffix}"), now=NOW)
    assert summary["reasons"] == {"event_time in the future": 3, "event_time before catalogue start": 1}


def test_reingest_says_nothing_landed(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(pd.DataFrame(rows(("u1", "i1"), ("u2", "i2"))), tmp_path / "log.csv")
    assert run_cli(settings, "ingest", str(path), "--json") == 0
    first = json.loads(capsys.readouterr().out)
    assert run_cli(settings, "ingest", str(path), "--json") == 0
    again = json.loads(capsys.readouterr().out)

    assert (first["rows_landed"], first["message"]) == (2, "landed 2 row(s)")
    assert again["rows_landed"] == 0 and again["already_ingested"] is True
    assert again["message"].startswith("nothing new landed: this file was ingested at ")
    assert again["rows_clean"] == first["rows_clean"] == 2  # what the batch holds


@pytest.mark.parametrize("columns", [["batch"], ["source_row", "ingested_at"], ["rating_raw"]])
def test_columns_colliding_with_the_lakes_own_are_refused(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture, columns: list[str]
) -> None:
    log = pd.DataFrame(rows(("u1", "i1"))).assign(**dict.fromkeys(columns, "mine"))
    path = write(log, tmp_path / "log.csv")
    assert run_cli(settings, "ingest", str(path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"column(s) {', '.join(columns)} are the service's own" in err
    assert landed(settings) == []


def test_a_semicolon_file_names_the_file_and_the_delimiter(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f"user_id;item_id;event_time;rating\nu1;i1;{TIME};4\n")
    assert run_cli(settings, "ingest", str(path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "';'-delimited" in err


def test_evaluate_json_to_an_unwritable_path_keeps_the_metrics(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.jobs import evaluate

    monkeypatch.setattr(evaluate, "run", lambda *args, **kwargs: {"model": "popularity", "ndcg@10": 0.125})
    for target in (tmp_path, Path("/dev/full")):
        assert run_cli(settings, "evaluate", "--model", "popularity", "--json", str(target)) == 2
        captured = capsys.readouterr()
        assert "0.125" in captured.out  # the computed metrics are printed before the write fails
        assert captured.err.count("\n") == 1 and captured.err.startswith(f"r2ec: error: cannot write {target}")


@pytest.mark.parametrize("value", ["-5", "0", "many"])
@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_max_samples_must_be_a_positive_integer(
    settings: Settings, capsys: pytest.CaptureFixture, value: str, command: str
) -> None:
    args = ["--model", "popularity"] if command == "evaluate" else ["--run-id", "x"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(settings, command, *args, "--max-samples", value)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-samples: must be a positive integer" in err


def test_a_state_folder_that_is_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("R2EC_HOME", str(home))
    for argv in (["ingest", str(tmp_path / "log.csv")], ["--home", str(home / "below"), "model", "list"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("r2ec: error: state folder ") and "not a folder" in err


def test_features_materialize_before_apply_fails_clearly(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ingest.run(settings, "ingest", write(pd.DataFrame(rows(("u1", "i1"))), tmp_path / "log.csv"), now=NOW)
    assert run_cli(settings, "features", "materialize") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "r2ec features apply" in err
