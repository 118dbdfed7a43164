"""A real Airflow 3 on loopback: its own ``api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` as
subprocesses (LocalExecutor, metadata in a fresh PostgreSQL database), the repository's ``dags/`` and the tiny
embedded world. ``recommend_nightly`` is triggered through the REST API (v2), its published run is read back
through the read API, one mapped shard is cleared and re-runs without changing anything, and a headless
Chromium looks at the Airflow UI (the screenshot is kept when ``R2EC_SCREENSHOT_DIR`` is set).

Every process is stopped and the database dropped at the end, also when a test fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from services.recstore import RecStore
from services.settings import Settings
from tests.conftest import unavailable
from tests.dags.conftest import AIRFLOW, DAG_IDS, airflow_env
from tests.service_world import build_world

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(900)]

POSTGRES = "postgres@127.0.0.1:5432"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
RUN_WAIT_S = 480
K = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Call ``check`` until it returns something truthy; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := check():
                return result
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database for Airflow's metadata; dropped afterwards."""
    import psycopg

    name = f"r2ec_airflow_{os.getpid()}_{secrets.token_hex(3)}"
    admin = f"postgresql://{POSTGRES}/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{POSTGRES}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def started(name: str, env: dict[str, str], logs: Path, command: list[str] | None = None) -> Iterator[subprocess.Popen]:
    """``airflow <name>`` (or ``command``) in its own process group, output in ``<logs>/<name>.log``; SIGTERM to
    the group at the end, SIGKILL if it lingers."""
    log = (logs / f"{name}.log").open("ab")
    process = subprocess.Popen(
        command or [str(AIRFLOW), name], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield process
    finally:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(grace)
                os.killpg(process.pid, 0)  # children of the group may outlive the leader
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@dataclass
class Airflow:
    """A running Airflow: its REST API (authenticated client), home and the world its tasks serve."""

    url: str
    api: httpx.Client
    home: Path
    logs: Path
    world: Settings
    env: dict[str, str]
    processes: dict[str, ExitStack]

    def start(self, name: str, **env: str) -> None:
        """(Re)start one component, with ``env`` on top of the shared environment from now on."""
        if name in self.processes:
            self.processes.pop(name).close()
        self.env.update(env)
        stack = ExitStack()
        stack.enter_context(started(name, self.env, self.logs))
        self.processes[name] = stack

    def healthy(self) -> bool:
        health = self.get("/api/v2/monitor/health")
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

    def get(self, path: str) -> Any:
        response = self.api.get(path)
        response.raise_for_status()
        return response.json()

    def send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        response = self.api.request(method, path, json=body)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def diagnostics(self) -> str:
        return "\n".join(f"--- {name} ---\n{tail(self.logs / f'{name}.log')}" for name in COMPONENTS)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Iterator[Airflow]:
    root = tmp_path_factory.mktemp("airflow-live")
    world = build_world(root / "world", tiny_cache)
    home, logs = root / "airflow", root / "process-logs"
    logs.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        try:
            database = stack.enter_context(fresh_database())
        except Exception as error:
            unavailable(f"cannot create a PostgreSQL database for Airflow ({type(error).__name__}: {error})")
        env = {
            **os.environ,
            **airflow_env(home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            # Qdrant in local mode admits one process at a time: the shards of a run go one after the other.
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "true",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"{url}/",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": database,
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # No scheduled runs: unpausing recommend_nightly would start the latest nightly run for all users.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "false",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__TRIGGERER__CAPACITY": "10",
            "R2EC_HOME": str(world.root),
            "R2EC_DATASET": "synthetic",
            "R2EC_PROGRESS": "false",
            "R2EC_RECOMMEND_TOP_K": str(K),
            "R2EC_RECOMMEND_CHUNK_USERS": "8",
        }
        migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
        if migrate.returncode != 0:
            unavailable(f"`airflow db migrate` failed: {(migrate.stdout + migrate.stderr)[-2000:]}")
        api = stack.enter_context(httpx.Client(base_url=url, timeout=30))
        running = Airflow(url, api, home, logs, world, env, {})
        for name in COMPONENTS:
            running.start(name)
            stack.callback(lambda name=name: running.processes.pop(name).close())
        try:
            wait_for("the scheduler, dag-processor and triggerer to report healthy", running.healthy, 240)
        except AssertionError as error:
            unavailable(f"Airflow did not start: {error}\n{running.diagnostics()}")
        token = api.get("/auth/token").json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        wait_for(
            "the dag-processor to parse dags/",
            lambda: {d["dag_id"] for d in running.get("/api/v2/dags?limit=100")["dags"]} >= set(DAG_IDS),
            240,
        )
        yield running


def published_rows(settings: Settings, run_id: str) -> pd.DataFrame:
    query = sa.text("SELECT user_id, rank, item_id, score FROM recommendations WHERE run_id = :run")
    with RecStore.from_settings(settings).engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query, {"run": run_id}).mappings().all())
    return frame.sort_values(["user_id", "rank"], ignore_index=True)


def wait_for_run(airflow: Airflow, dag_id: str, run_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    run = wait_for(f"{dag_id} run {run_id} to finish", finished, RUN_WAIT_S, interval=3)
    if run["state"] != "success":
        instances = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
        pytest.fail(f"{dag_id} run {run_id} ended {run['state']}: {states}\n{airflow.diagnostics()}")
    return run


def test_a_triggered_nightly_run_is_published_under_its_airflow_run_id_and_a_cleared_shard_changes_nothing(
    airflow: Airflow,
) -> None:
    from tests.e2e.conftest import serving

    dag = "recommend_nightly"
    airflow.send("PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
    run_id = airflow.send("POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": {"users": "12"}})[
        "dag_run_id"
    ]
    wait_for_run(airflow, dag, run_id)
    assert [run["dag_run_id"] for run in airflow.get(f"/api/v2/dags/{dag}/dagRuns")["dag_runs"]] == [run_id]

    store = RecStore.from_settings(airflow.world)
    assert store.current_run()["run_id"] == run_id
    before = published_rows(airflow.world, run_id)
    assert before["user_id"].nunique() == 12 and len(before) == 12 * K
    user = before["user_id"].iloc[0]
    with serving(airflow.world) as api_url:
        served = httpx.get(f"{api_url}/v1/users/{user}/recommendations", timeout=10).json()
    assert served["run_id"] == run_id and len(served["items"]) == K
    instances = airflow.get(f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert sorted((ti["task_id"], ti["map_index"]) for ti in instances) == [
        ("plan", -1),
        ("publish", -1),
        ("score", 0),
        ("score", 1),
    ]

    shard = f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances/score/0"
    first_try = airflow.get(shard)["try_number"]
    body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [["score", 0]], "only_failed": False}
    cleared = airflow.send("POST", f"/api/v2/dags/{dag}/clearTaskInstances", body)
    assert [(ti["task_id"], ti["map_index"]) for ti in cleared["task_instances"]] == [("score", 0)]

    def rerun_done() -> bool:
        ti = airflow.get(shard)
        return ti["try_number"] > first_try and ti["state"] == "success"

    wait_for("the cleared shard to run again", rerun_done, RUN_WAIT_S, interval=3)
    wait_for_run(airflow, dag, run_id)
    pd.testing.assert_frame_equal(published_rows(airflow.world, run_id), before)  # no duplicate, nothing changed
    assert store.current_run()["run_id"] == run_id


@pytest.mark.browser
def test_the_airflow_ui_lists_the_dags(airflow: Airflow, tmp_path: Path) -> None:
    """What a person sees at /dags after the run; saved as airflow-dags.png under ``R2EC_SCREENSHOT_DIR``."""
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.e2e.test_explorer import chromium

    path = tmp_path / "airflow-dags.png"
    with chromium() as driver:
        driver.set_window_size(1440, 1250)
        driver.get(f"{airflow.url}/dags")
        WebDriverWait(driver, 60).until(lambda d: all(dag_id in d.page_source for dag_id in DAG_IDS))
        WebDriverWait(driver, 30).until(lambda d: "recommend_nightly" in d.find_element("tag name", "body").text)
        time.sleep(2)  # let the last status badges and charts settle
        assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 20_000
    if target := os.environ.get("R2EC_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / path.name)


def test_a_champion_move_in_mlflow_alone_starts_items_reindex_and_an_unsigned_call_does_not(
    airflow: Airflow, tiny_cache: Path
) -> None:
    """MLflow server (webhooks need one) -> ``r2ec hooks`` -> Airflow asset event -> ``items_reindex``."""
    from cryptography.fernet import Fernet
    from mlflow import MlflowClient
    from pydantic import SecretStr

    from services import registry, vectors
    from services.hooks import CHAMPION_ASSET
    from services.jobs import model_admin
    from tests.service_world import perturbed_copy

    world, secret = airflow.world, secrets.token_urlsafe(24)
    dag = "items_reindex"
    # asset-triggered runs need the scheduler's job schedule; the nightly DAG stays paused so none of its runs start
    airflow.send("PATCH", "/api/v2/dags/recommend_nightly", {"is_paused": True})
    airflow.start("scheduler", AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="true")
    wait_for("the restarted scheduler to report healthy", airflow.healthy, 240)
    airflow.send("PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
    mlflow_port, hooks_port = free_port(), free_port()
    mlflow_url, hooks_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{hooks_port}"
    mlflow_env = {
        **airflow.env,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",  # the receiver is on loopback here
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    hooks_env = {
        **airflow.env,
        "R2EC_WEBHOOK_SECRET": secret,
        "R2EC_AIRFLOW_API_URL": airflow.url,
    }
    mlflow_command = [str(AIRFLOW.with_name("mlflow")), "server", "--backend-store-uri", world.mlflow_uri,
                      "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]  # fmt: skip
    hooks_command = [str(AIRFLOW.with_name("r2ec")), "hooks", "--port", str(hooks_port)]
    with (
        started("mlflow-server", mlflow_env, airflow.logs, mlflow_command),
        started("r2ec-hooks", hooks_env, airflow.logs, hooks_command),
    ):
        wait_for("the MLflow server", lambda: httpx.get(f"{mlflow_url}/health", timeout=5).status_code == 200, 120)
        wait_for("the receiver", lambda: httpx.get(f"{hooks_url}/docs", timeout=5).status_code == 200, 60)
        server = world.model_copy(update={"mlflow_tracking_uri": mlflow_url, "webhook_secret": SecretStr(secret)})
        registry.ensure_webhook(server, f"{hooks_url}/hooks/mlflow")
        checkpoint = perturbed_copy(world.root / "models" / "tiny", world.root / "models" / "tiny-hook", tiny_cache)
        version = model_admin.register_shipped(world, "register-tiny-hook", checkpoint)["version"]
        asset = next(a for a in airflow.get("/api/v2/assets?limit=100")["assets"] if a["uri"] == CHAMPION_ASSET)

        def events() -> list[dict[str, Any]]:
            return airflow.get(f"/api/v2/assets/events?asset_id={asset['id']}&limit=100")["asset_events"]

        def runs() -> list[dict[str, Any]]:
            return airflow.get(f"/api/v2/dags/{dag}/dagRuns")["dag_runs"]

        move = {"entity": "model_version_alias", "action": "created",
                "data": {"name": world.registry_model_name, "alias": "champion", "version": version}}  # fmt: skip
        unsigned = httpx.post(f"{hooks_url}/hooks/mlflow", json=move, timeout=10)
        stamp = str(int(time.time()))
        guessed = {"X-MLflow-Signature": "v1,Zm9yZ2Vk", "X-MLflow-Timestamp": stamp, "X-MLflow-Delivery-Id": "f-1"}
        forged = httpx.post(f"{hooks_url}/hooks/mlflow", json=move, headers=guessed, timeout=10)
        assert (unsigned.status_code, forged.status_code) == (401, 401), (unsigned.text, forged.text)
        assert events() == [] and runs() == []

        MlflowClient(mlflow_url, registry_uri=mlflow_url).set_registered_model_alias(
            world.registry_model_name, "champion", version
        )

        event = wait_for("the asset event sent for the alias move", events, 120)[0]
        assert event["extra"]["version"] == version and event["extra"]["via"] == "mlflow"
        run = wait_for("items_reindex to be started by the asset event", runs, 120)[0]
        wait_for_run(airflow, dag, run["dag_run_id"])
    assert len(runs()) == 1 and len(events()) == 1
    client = vectors.connect(world)
    try:
        assert vectors.live_collection(client).startswith(f"items__v{version}__")
    finally:
        client.close()
