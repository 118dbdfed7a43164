"""The production files say what the image can do: docker-compose.yml, .env.example, the Dockerfile, the init SQL.

No Docker engine runs here, so nothing is started. ``docker-compose config`` (Debian's 1.29, installed by
``make system-deps``) validates the file; PyYAML reads its structure; the project's venv imports every executor
and driver module the file relies on; the Qdrant image has the installed client's major.minor.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MAKEFILE = ROOT / "Makefile"
INIT_SQL = ROOT / "deploy" / "postgres-init.sql"

ONE_SHOT = {"airflow-init", "recstore-migrate"}  # run to completion; the others run until stopped
AIRFLOW_COMMANDS = {
    "airflow-api-server": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
    "airflow-worker": ["airflow", "celery", "worker"],
    "gpu-worker": ["airflow", "celery", "worker"],
}
IMAGE_SOURCES = ("r2ec/", "services/", "feature_repo/", "dags/", "models/")
POSTGRES_URL = re.compile(r"postgresql(?:\+(\w+))?://")
VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)")  # ${NAME...} that compose interpolates ($${NAME} is escaped)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as YAML (merge keys resolved by PyYAML)."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def stack(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping (KEY: value), not a list"
    return {k: str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _docker_compose(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose`` on the file with a bare environment (nothing of the caller's leaks into it)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        reason = "docker-compose is not installed (`make system-deps` as root)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{reason}; CI is set, so the test cannot be skipped", pytrace=False)
        pytest.skip(reason)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [exe, "--project-directory", str(ROOT), *args, "-f", str(COMPOSE), "config", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# (a) the compose file: valid, complete about its variables, and shaped as the stack needs


def test_compose_config_accepts_the_file_with_env_example(tmp_path: Path) -> None:
    done = _docker_compose("--env-file", str(ENV_EXAMPLE), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr


def test_compose_config_refuses_missing_secrets(tmp_path: Path) -> None:
    """Secrets have no defaults: without them the file does not even render, and says which one to set."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = _docker_compose("--env-file", str(empty), tmp_path=tmp_path)
    assert done.returncode != 0, "docker-compose.yml rendered without any secret: a secret has a default"
    assert re.search(r"set \w+ in \.env", done.stderr), done.stderr


def test_secrets_are_required_everywhere() -> None:
    """A password, key, secret or token is never given a default in the file (``${NAME:?message}`` only)."""
    uses = re.findall(r"(?<!\$)\$\{(\w+)(:?[?\-]?)", COMPOSE.read_text())
    secrets = {name for name, _ in uses if re.search(r"PASSWORD|SECRET|KEY|TOKEN", name)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "R2EC_API_TOKEN"} <= secrets
    loose = sorted({name for name, form in uses if name in secrets and form != ":?"})
    assert not loose, f"secrets with a default or optional: {loose}"


def test_env_example_lists_every_variable_once_with_a_comment() -> None:
    used = set(VARIABLE.findall(COMPOSE.read_text()))
    lines = ENV_EXAMPLE.read_text().splitlines()
    listed = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert len(listed) == len(set(listed)), f"listed twice: {sorted({n for n in listed if listed.count(n) > 1})}"
    assert set(listed) == used, f"missing: {sorted(used - set(listed))}, unused: {sorted(set(listed) - used)}"
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            above = [x for x in lines[:i] if x][-1:]  # a comment, or the commented line of its group
            assert above and (above[0].startswith("#") or "_PORT=" in line), f"{line!r} has no comment"


def test_every_long_running_service_has_a_healthcheck(stack: dict[str, dict[str, Any]]) -> None:
    assert stack.keys() >= ONE_SHOT
    for name, service in stack.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} is a one-shot job: it must not restart"
            assert "healthcheck" not in service, name
        else:
            test = (service.get("healthcheck") or {}).get("test")
            assert test and test != ["NONE"], f"{name} has no healthcheck"
            assert not service.get("healthcheck", {}).get("disable"), name


def test_every_dependency_waits_for_health_or_completion(stack: dict[str, dict[str, Any]]) -> None:
    for name, service in stack.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition per service"
        for dependency, spec in depends.items():
            assert dependency in stack, f"{name} depends on unknown {dependency}"
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec == {"condition": expected}, f"{name} -> {dependency}: {spec}"
    assert stack["airflow-scheduler"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert stack["r2ec-api"]["depends_on"]["recstore-migrate"]["condition"] == "service_completed_successfully"


def test_every_postgres_url_names_psycopg_3() -> None:
    text = COMPOSE.read_text()
    assert "psycopg2" not in text.lower()
    drivers = POSTGRES_URL.findall(text)
    assert drivers, "no PostgreSQL URL found"
    assert set(drivers) == {"psycopg"}, f"PostgreSQL URLs must name +psycopg, found drivers {set(drivers)}"


def test_airflow_runs_every_component_on_celery(stack: dict[str, dict[str, Any]]) -> None:
    for name, command in AIRFLOW_COMMANDS.items():
        assert _command(stack[name])[: len(command)] == command, name
        env = _env(stack[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://"), name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${"), f"{name}: the JWT secret is not shared"
    init = " ".join(_command(stack["airflow-init"]))
    assert init.endswith("&& exec airflow db migrate"), init
    assert "AIRFLOW_HOOKS_PASSWORD" in init and "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in init
    assert "--queues" in (worker := _command(stack["airflow-worker"]))
    assert worker[worker.index("--queues") + 1] == "default"


def test_gpu_worker_is_only_in_the_gpu_profile(stack: dict[str, dict[str, Any]]) -> None:
    gpu = stack["gpu-worker"]
    assert gpu.get("profiles") == ["gpu"]
    command = _command(gpu)
    assert command[command.index("--queues") + 1] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    for name, service in stack.items():
        if name != "gpu-worker":
            assert not service.get("profiles"), f"{name} would not start by default"
            assert "devices" not in str(service.get("deploy", "")), f"{name} reserves a device"


def test_mlflow_serves_artifacts_from_postgres(stack: dict[str, dict[str, Any]]) -> None:
    mlflow = stack["mlflow"]
    command, env = _command(mlflow), _env(mlflow)
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    destination = next(c.split("=", 1)[1] for c in command if c.startswith("--artifacts-destination="))
    assert any(v.split(":")[1] == destination for v in mlflow["volumes"]), "artifacts are not on a volume"
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "mlflow:5000" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(","), "other services call it mlflow:5000"


def test_read_api_serves_as_a_read_only_role(stack: dict[str, dict[str, Any]]) -> None:
    api = stack["r2ec-api"]
    assert _command(api) == ["r2ec", "serve", "--host", "0.0.0.0", "--port", "8000"]
    env = _env(api)
    assert env["R2EC_RECSTORE_READER_URL"].startswith("postgresql+psycopg://r2ec_api:")
    assert "R2EC_RECSTORE_URL" not in env, "the read API must not know the writer's password"
    assert "R2EC_API_TOKEN" in env


def test_service_variables_are_settings(stack: dict[str, dict[str, Any]]) -> None:
    """Every R2EC_* variable a container gets is a field of the one settings object (a typo would be ignored)."""
    from services.settings import Settings

    fields = {f"R2EC_{name.upper()}" for name in Settings.model_fields}
    for name, service in stack.items():
        if service.get("image", "").startswith("r2ec:"):
            unknown = {k for k in _env(service) if k.startswith("R2EC_")} - fields
            assert not unknown, f"{name}: {sorted(unknown)} are not settings"


def test_init_sql_reads_what_the_postgres_service_passes(stack: dict[str, dict[str, Any]]) -> None:
    wanted = set(re.findall(r"^\\getenv \w+ (\w+)$", INIT_SQL.read_text(), flags=re.M))
    assert wanted, "postgres-init.sql reads no variable"
    assert wanted <= _env(stack["postgres"]).keys()
    assert any(v.endswith("/docker-entrypoint-initdb.d/init.sql:ro") for v in stack["postgres"]["volumes"])


# The image: installs what `make install` installs, copies the code the services run, runs as non-root


def _pip_installs(text: str, pip: str) -> list[str]:
    """The arguments of each ``pip install`` in order, without -q and the index choice (CPU or CUDA torch)."""
    found = re.findall(rf"{re.escape(pip)} install ([^\n&\\]+)", text)
    return [" ".join(re.sub(r"(?:^| )-q(?= |$)|--index-url \S+", " ", args).split()) for args in found]


def test_dockerfile_installs_as_the_makefile_does() -> None:
    make = _pip_installs(MAKEFILE.read_text(), "$(PIP)")
    image = _pip_installs(DOCKERFILE.read_text(), "pip")
    assert make[0] == "--upgrade pip" and make[1].startswith("torch=="), make
    assert image == make


def test_dockerfile_copies_the_code_and_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    workdir = re.findall(r"^WORKDIR (\S+)", text, flags=re.M)[-1]
    assert re.search(r"^COPY (--\S+ )*\. \.$", text, flags=re.M), "the Dockerfile does not copy the context"
    ignore = DOCKERIGNORE.read_text().splitlines()
    assert "*" in ignore, ".dockerignore is not an allowlist: local state (.venv, var, .env) would be sent"
    allowed = {line[1:].rstrip("/") + "/" for line in ignore if line.startswith("!")}
    assert set(IMAGE_SOURCES) <= allowed, f"not in the image: {sorted(set(IMAGE_SOURCES) - allowed)}"
    assert f"AIRFLOW__CORE__DAGS_FOLDER={workdir}/dags" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the image runs as root"


# (b) the modules the compose file relies on import in the project's venv


def test_executor_and_drivers_import_in_the_venv(tmp_path: Path) -> None:
    """CeleryExecutor resolves and builds its Celery app from the compose file's kind of configuration."""
    script = """
import json
import psycopg, redis, qdrant_client, sqlalchemy as sa
from celery.app.backends import by_url
from airflow.executors.executor_loader import ExecutorLoader
from airflow.providers.celery.executors import celery_executor
engine = sa.create_engine("postgresql+psycopg://airflow:secret@postgres:5432/airflow")
print(json.dumps({
    "executor": ExecutorLoader.import_default_executor_cls()[0].__name__,
    "broker": celery_executor.app.conf.broker_url,
    "backend": by_url(celery_executor.app.conf.result_backend)[0].__name__,  # its class; building it connects
    "dialect": [engine.dialect.name, engine.dialect.driver, engine.dialect.dbapi.__name__],
    "redis": redis.Redis.__module__, "psycopg": psycopg.__version__, "qdrant": qdrant_client.QdrantClient.__name__,
}))
"""
    pg = "postgresql+psycopg://airflow:secret@postgres:5432/airflow"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": pg,
        "AIRFLOW__CELERY__BROKER_URL": "redis://:secret@redis:6379/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{pg}",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["executor"] == "CeleryExecutor"
    assert found["broker"] == "redis://:secret@redis:6379/0"
    assert found["backend"] == "DatabaseBackend"
    assert found["dialect"] == ["postgresql", "psycopg", "psycopg"]
    assert found["redis"].startswith("redis.")


@pytest.mark.postgres
def test_psycopg_url_reaches_postgres() -> None:
    import sqlalchemy as sa

    engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.redis
def test_redis_client_reaches_redis() -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


# (c) the Qdrant server pairs with the installed client


def test_qdrant_image_shares_the_clients_major_minor(stack: dict[str, dict[str, Any]]) -> None:
    from qdrant_client.common.version_check import is_compatible

    image = stack["qdrant"]["image"]
    match = re.fullmatch(r"qdrant/qdrant:v(\d+)\.(\d+)\.(\d+)(-unprivileged)?", image)
    assert match, f"the Qdrant image must name an exact version: {image}"
    client = importlib.metadata.version("qdrant-client")
    assert match.group(1, 2) == tuple(client.split(".")[:2]), f"server {image}, client {client}"
    assert is_compatible(client, ".".join(match.group(1, 2, 3)))


def test_the_webhook_receiver_can_log_in_to_airflow_and_mlflow_can_reach_it(stack: dict[str, dict[str, Any]]) -> None:
    hooks = _env(stack["r2ec-hooks"])
    assert hooks["R2EC_AIRFLOW_API_URL"] == "http://airflow-api-server:8080"
    users = dict(
        u.split(":") for u in _env(stack["airflow-scheduler"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")
    )
    assert users[hooks["R2EC_AIRFLOW_USERNAME"]] in ("op", "admin"), "asset events need role op"
    init = _env(stack["airflow-init"])
    assert hooks["R2EC_AIRFLOW_PASSWORD"] == init["AIRFLOW_HOOKS_PASSWORD"], "one password, written by airflow-init"
    assert (
        init["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
        == _env(stack["airflow-api-server"])["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    )
    mlflow = _env(stack["mlflow"])
    assert "http" in mlflow["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"].split(",")
    assert mlflow["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"].startswith("${"), "a fixed key, from .env"
    assert "postgres" in hooks["R2EC_RECSTORE_URL"], "the delivery ledger is in the service's database"
