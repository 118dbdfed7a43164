"""DAG integrity (the Astronomer template's checks, and a few of ours): every file in ``dags/`` imports without
error, fast and without heavy libraries; every DAG has an owner, tags, ``retries >= 2``, a ``doc_md``, one active
run at a time, no catch-up; the asset chain is closed (each asset a DAG waits for is produced by another one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import DAG_IDS, DAGS, ROOT, airflow_env

DAG_FILES = sorted(DAGS.glob("*.py"))
HEAVY = ("torch", "feast", "great_expectations", "mlflow", "transformers", "peft", "qdrant_client", "pandas")
MAX_IMPORT_S = 5.0
# Imports one DAG file by path in a fresh interpreter, like the dag-processor does, and reports the time it took
# and which heavy libraries it left in sys.modules.
PROBE = """
import importlib.util, json, sys, time
path, heavy = sys.argv[1], sys.argv[2].split(",")
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "heavy": [name for name in heavy if name in sys.modules]}))
"""


def test_there_is_one_file_per_dag() -> None:
    assert sorted(p.stem for p in DAG_FILES) == sorted(DAG_IDS)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_a_dag_file_imports_fast_without_heavy_libraries(path: Path, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **airflow_env(tmp_path)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), ",".join(HEAVY)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"{path.name} imports {report['heavy']} at top level: import inside the task"
    assert report["seconds"] < MAX_IMPORT_S, f"{path.name} took {report['seconds']:.1f} s to import"


def test_the_dags_folder_parses_without_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_a_dag_has_owner_tags_retries_and_docs(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.owner == "r2ec"
    assert "r2ec" in dag.tags and len(dag.tags) >= 2
    assert dag.doc_md and dag.doc_md.strip().startswith(f"### {dag_id} ")
    assert dag.max_active_runs == 1 and dag.catchup is False
    for task in dag.tasks:
        assert task.retries >= 2, f"{dag_id}.{task.task_id} has retries={task.retries}"
        assert task.retry_delay >= timedelta(minutes=1), f"{dag_id}.{task.task_id}: retry_delay too short"
        assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} has no execution_timeout"
        assert task.doc_md or task.python_callable.__doc__, f"{dag_id}.{task.task_id} has no docstring"


def uris(assets: Any) -> set[str]:
    return {asset.uri for asset in assets}


def test_the_asset_chain_is_closed(dagbag: Any) -> None:
    produced: dict[str, set[str]] = {}
    consumed: dict[str, set[str]] = {}
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            for uri in uris(task.outlets):
                produced.setdefault(uri, set()).add(dag.dag_id)
        condition = getattr(dag.timetable, "asset_condition", None)  # only asset-scheduled DAGs have one
        for asset in condition.objects if condition is not None else ():
            consumed.setdefault(asset.uri, set()).add(dag.dag_id)
    assert consumed == {
        "r2ec://lake/interactions": {"features_materialize"},
        "r2ec://registry/champion": {"items_reindex"},
    }
    assert produced == {
        "r2ec://lake/interactions": {"interactions_validate"},
        "r2ec://registry/champion": {"model_promote", "recpo_retrain"},
        "r2ec://recstore/recommendations": {"recommend_nightly"},
    }


def test_schedules(dagbag: Any) -> None:
    from airflow.sdk import CronDataIntervalTimetable, CronTriggerTimetable
    from airflow.sdk.definitions.timetables.simple import NullTimetable

    timetables = {dag_id: dagbag.dags[dag_id].timetable for dag_id in DAG_IDS}
    assert isinstance(timetables["interactions_validate"], CronDataIntervalTimetable)  # a day-wide data interval
    assert timetables["interactions_validate"].expression == "0 0 * * *"
    assert isinstance(timetables["recommend_nightly"], CronTriggerTimetable)
    assert timetables["recommend_nightly"].expression == "0 2 * * *"
    assert isinstance(timetables["recpo_retrain"], CronTriggerTimetable)
    assert timetables["recpo_retrain"].expression == "0 3 * * 0"  # weekly; on demand through the trigger form
    assert isinstance(timetables["model_promote"], NullTimetable)  # manual only


def test_trigger_forms(dagbag: Any) -> None:
    def defaults(dag_id: str) -> dict[str, Any]:
        return dagbag.dags[dag_id].params.dump()

    assert defaults("recpo_retrain") == {
        "phases": "recpo",
        "base": "champion",
        "max_minutes": None,
        "max_steps": None,
        "eval_samples": None,
        "auto_promote": False,
    }
    assert defaults("model_promote") == {"version": None, "force": False}
    assert not dagbag.dags["model_promote"].params.get_param("version").has_value  # the form asks for it
    assert defaults("recommend_nightly") == {"users": "all", "shards": 2, "as_of": None}
    assert defaults("interactions_validate") == {"catch_up_from": None}  # a scheduled run: its interval only


def test_recommend_nightly_fans_out_over_shards_and_publishes_once(dagbag: Any) -> None:
    dag = dagbag.dags["recommend_nightly"]
    plan, score, publish = (dag.get_task(task_id) for task_id in ("plan", "score", "publish"))
    assert score.is_mapped and not plan.is_mapped
    assert score.upstream_task_ids == {"plan"} and publish.upstream_task_ids == {"score"}
    assert score.partial_kwargs["op_kwargs"] == {"users": "{{ params.users }}"}
