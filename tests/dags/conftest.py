"""Airflow for the DAG tests: a SQLite metadata database under a temporary ``AIRFLOW_HOME`` (migrated once for
the package), the repository's ``dags/`` as the DAGs folder, and helpers to run a DAG with ``dag.test()``.

Airflow reads its configuration when it is first imported, so these tests import it only inside fixtures,
after the environment below is set; ``airflow`` must not be imported earlier in the same pytest process.
Importing it also sets the root logger to INFO with a handler on stdout: the fixture takes that back when the
package's tests end, so later tests of the suite see the logging they always had.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
AIRFLOW = Path(sys.executable).with_name("airflow")
DAG_IDS = (
    "interactions_validate",
    "features_materialize",
    "recpo_retrain",
    "model_promote",
    "items_reindex",
    "recommend_nightly",
)


def airflow_env(home: Path) -> dict[str, str]:
    """What every Airflow process of the tests shares: its home, the DAGs folder, no examples, quiet parsing."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


@pytest.fixture(scope="package")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A migrated SQLite metadata database, and this process's environment pointing Airflow at it."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(home)
    if "airflow.configuration" in sys.modules:
        from airflow.configuration import AIRFLOW_HOME

        if Path(AIRFLOW_HOME) != home:
            pytest.fail(f"airflow was imported before the DAG tests set AIRFLOW_HOME (it uses {AIRFLOW_HOME})")
    migrate = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        try:
            yield home
        finally:
            for handler in root.handlers[:]:
                if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
                    root.removeHandler(handler)
            root.setLevel(level)


@pytest.fixture(scope="package")
def dagbag(airflow_home: Path) -> Any:
    """The DAGs folder parsed the way the dag-processor parses it."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag


def run_dag(dagbag: Any, dag_id: str, **kwargs: Any) -> Any:
    """One ``dag.test()`` run in this process; returns the finished DagRun."""
    return dagbag.dags[dag_id].test(**kwargs)


def task_states(dag_run: Any) -> dict[str, str]:
    """``task_id`` (``task_id[i]`` for mapped ones) -> final state of each task instance of the run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).one()
        return {
            ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": str(ti.state)
            for ti in run.get_task_instances(session=session)
        }


def try_numbers(dag_run: Any) -> dict[str, int]:
    """``task_id`` -> how many times it was tried (1 = failed or succeeded without a retry)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).one()
        return {ti.task_id: ti.try_number for ti in run.get_task_instances(session=session)}


def xcom(dag_run: Any, task_id: str, map_index: int = -1) -> Any:
    """What a task of the run returned."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, map_index=map_index)
            .filter(XComModel.key == "return_value")
            .one()
        )
        return XComModel.deserialize_value(row)


def asset_events(uri: str) -> int:
    """How many events the asset has received (each successful producing task sends one)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == uri)
            .count()
        )
