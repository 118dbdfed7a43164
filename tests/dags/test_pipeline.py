"""The decisions the DAGs delegate to ``services.jobs.pipeline``, tested without Airflow: which inbox files a
data interval takes, refusals, when a retrain promotes, the nightly shards and what goes into XCom."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from services.datastore import write_dataset
from services.jobs import pipeline
from services.lake import read_clean_log
from services.settings import Settings, load_settings
from tests.dags.test_dag_integrity import HEAVY, PROBE

JUNE_1, JUNE_2 = datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 2, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = load_settings(home=tmp_path / "var")
    items = pd.DataFrame({"item_id": ["i1", "i2", "i3"], "title": ["A", "B", "C"]})
    write_dataset(s, s.dataset, pd.DataFrame(columns=["user_id", "item_id", "event_time", "rating"]), items)
    return s


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("user_id,item_id,event_time,rating\n")


def test_an_interval_takes_the_files_named_for_its_days(settings: Settings) -> None:
    touch(
        settings.inbox(),
        "2024-06-01.csv",
        "ratings-2024-06-01-part2.jsonl",
        "2024-06-02.parquet",  # the next interval's
        "2024-05-31.csv",  # the previous one's
        ".2024-06-01.csv",  # hidden: still being written
        "2024-06-01.xlsx",  # not a log format
        "ratings.csv",  # no day in the name
        "2024-06-31.csv",  # no such day
        "x12024-06-01.csv",  # digits glued to the date
    )
    found = [p.name for p in pipeline.inbox_files(settings, JUNE_1, JUNE_2)]
    assert found == ["2024-06-01.csv", "ratings-2024-06-01-part2.jsonl"]
    assert [p.name for p in pipeline.inbox_files(settings, JUNE_1, datetime(2024, 6, 3, tzinfo=UTC))] == [
        "2024-06-01.csv",
        "2024-06-02.parquet",
        "ratings-2024-06-01-part2.jsonl",
    ]
    assert pipeline.inbox_files(settings, JUNE_1, JUNE_2, dataset="other") == []  # no folder yet


def test_the_inbox_folder_is_a_setting(tmp_path: Path) -> None:
    assert load_settings(home=tmp_path / "var").inbox("ml-100k") == tmp_path / "var" / "inbox" / "ml-100k"
    moved = load_settings(home=tmp_path / "var", inbox_dir=tmp_path / "drop")
    assert moved.inbox() == tmp_path / "drop" / moved.dataset


def test_a_refused_file_fails_the_interval_after_the_others_landed(settings: Settings) -> None:
    good = pd.DataFrame(
        {"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "event_time": ["2024-06-01T10:00:00Z"] * 2, "rating": 4}
    )
    bad = good.assign(item_id=["nope", "i3"])  # half the rows unknown: refused
    settings.inbox().mkdir(parents=True)
    good.to_csv(settings.inbox() / "a-2024-06-01.csv", index=False)
    bad.to_csv(settings.inbox() / "b-2024-06-01.csv", index=False)
    (settings.inbox() / "c-2024-06-01.csv").write_bytes(b"")

    with pytest.raises(pipeline.Refused) as refused:
        pipeline.ingest_interval(settings, "day", JUNE_1, JUNE_2)

    message = str(refused.value)
    assert message.startswith("b-2024-06-01.csv: refused: 50.0% of rows are bad")
    assert "; c-2024-06-01.csv: " in message and "empty file" in message
    assert "a-2024-06-01.csv" not in message
    assert read_clean_log(settings)["user_id"].tolist() == ["u1", "u2"]  # the good file of the day landed


def test_a_good_interval_reports_counts_and_lands_nothing_twice(settings: Settings) -> None:
    frame = pd.DataFrame(
        {"user_id": ["u1", "u1"], "item_id": ["i1", "i2"], "event_time": ["2024-06-01T10:00:00Z"] * 2, "rating": 5}
    )
    settings.inbox().mkdir(parents=True)
    frame.to_csv(settings.inbox() / "2024-06-01.csv", index=False)
    first = pipeline.ingest_interval(settings, "day", JUNE_1, JUNE_2)
    again = pipeline.ingest_interval(settings, "day", JUNE_1, JUNE_2)
    assert (first["files"], first["rows_clean"], first["rows_quarantined"]) == (1, 2, 0)
    assert again["rows_clean"] == 2 and len(read_clean_log(settings)) == 2  # same batch: rewritten, not added


@pytest.mark.parametrize(
    ("auto", "gate", "expected"),
    [
        (False, "passed", "auto_promote is off: v3 stays challenger"),
        (True, "failed", "v3 did not pass its gate (0.01 vs 0.02); champion unchanged"),
    ],
)
def test_a_retrain_promotes_only_when_asked_and_passed(auto: bool, gate: str, expected: str) -> None:
    trained = {"version": "3", "gate": gate, "gate_detail": "0.01 vs 0.02"}
    result = pipeline.promote_trained(load_settings(), "run", trained, auto)
    assert result == {"run_id": "run", "promoted": False, "reason": expected}


def test_a_passed_retrain_with_auto_promote_moves_champion(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def promote(settings: Settings, run_id: str, version: str, force: bool = False) -> dict[str, Any]:
        calls.append((run_id, version))
        return {"run_id": run_id, "champion": version, "previous": "2"}

    monkeypatch.setattr(pipeline, "promote", promote)
    trained = {"version": "3", "gate": "passed", "gate_detail": ""}
    assert pipeline.promote_trained(load_settings(), "run", trained, True)["promoted"] is True
    assert calls == [("run", "3")]


def test_an_unknown_phase_or_base_is_refused_before_training(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "var")
    with pytest.raises(pipeline.Refused, match="phases must be one of"):
        pipeline.retrain(settings, "run", phases="sft")
    with pytest.raises(pipeline.Refused, match=r"base 'champion'.*has no alias 'champion'"):
        pipeline.retrain(settings, "run")


def test_shards_and_xcom_summaries() -> None:
    assert pipeline.shards(2) == [[0, 2], [1, 2]] and pipeline.shards(1) == [[0, 1]]
    with pytest.raises(pipeline.Refused):
        pipeline.shards(0)
    summary = {"run_id": "r", "n": 3, "ok": True, "at": JUNE_1, "none": None, "nested": {"a": 1}, "rows": [1, 2]}
    assert pipeline.xcom_summary(summary) == {
        "run_id": "r",
        "n": 3,
        "ok": True,
        "at": "2024-06-01T00:00:00+00:00",
        "none": None,
    }
    assert pipeline.as_utc(datetime(2024, 6, 1, 2)) == datetime(2024, 6, 1, 2, tzinfo=UTC)


def test_the_import_probe_catches_a_heavy_top_level_import(tmp_path: Path) -> None:
    planted = tmp_path / "heavy_dag.py"
    planted.write_text("import pandas  # noqa\n")
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(planted), ",".join(HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert '"heavy": ["pandas"]' in probe.stdout


def test_catch_up_moves_the_start_back_to_a_valid_earlier_day_only() -> None:
    assert pipeline.catch_up_start(JUNE_2, None) == JUNE_2
    assert pipeline.catch_up_start(JUNE_2, " 2024-05-20 ") == datetime(2024, 5, 20, tzinfo=UTC)
    with pytest.raises(pipeline.Refused, match="is after the interval's start"):
        pipeline.catch_up_start(JUNE_1, "2024-06-02")
    with pytest.raises(pipeline.Refused, match="must be a day YYYY-MM-DD, not '20-5-2024'"):
        pipeline.catch_up_start(JUNE_1, "20-5-2024")


def test_a_night_is_read_as_of_the_form_time_or_else_the_runs_own_time() -> None:
    assert pipeline.night_as_of(None, JUNE_2) == JUNE_2
    assert pipeline.night_as_of("1998-04-23T00:00:00+00:00", JUNE_2) == datetime(1998, 4, 23, tzinfo=UTC)
    assert pipeline.night_as_of("1998-04-23T02:00:00+02:00", JUNE_2) == datetime(1998, 4, 23, tzinfo=UTC)
    assert pipeline.night_as_of("1998-04-23", JUNE_2) == datetime(1998, 4, 23, tzinfo=UTC)  # naive = UTC
    with pytest.raises(pipeline.Refused, match="as_of must be an ISO-8601 time"):
        pipeline.night_as_of("yesterday", JUNE_2)
