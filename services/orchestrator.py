"""The one adapter to Airflow from outside its tasks: its REST API (v2), as the UI and other systems use it, and
a local Airflow without servers for ``make demo`` (:class:`LocalAirflow`).

The REST client is used by the webhook receiver (``services.hooks``) to turn a registry event into an asset
event, which starts the DAGs scheduled on that asset exactly as an event sent by a task would. Authentication
is Airflow's own: ``POST /auth/token`` with ``airflow_username`` / ``airflow_password`` (the simple or FAB auth
manager's users), or, when no user is configured, ``GET /auth/token`` (simple auth manager, all users admins:
development).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from services.settings import Settings


class AirflowUnavailable(RuntimeError):
    """Airflow did not answer, refused the credentials, or does not know the asset; the message says which."""


class AirflowClient:
    """An authenticated session with an Airflow api-server."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None, timeout: float = 30):
        self.url = url.rstrip("/")
        self._login = {"username": username, "password": password or ""} if username else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> AirflowClient:
        if not settings.airflow_api_url:
            raise AirflowUnavailable("R2EC_AIRFLOW_API_URL is not set: no Airflow to send events to")
        password = settings.airflow_password.get_secret_value() if settings.airflow_password else None
        return cls(settings.airflow_api_url, settings.airflow_username, password)

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise AirflowUnavailable(f"Airflow at {self.url} did not answer ({type(error).__name__})") from error
        if response.status_code >= 400:
            raise AirflowUnavailable(f"Airflow {method} {path}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()

    def authenticate(self) -> None:
        """Get a JWT for the following calls."""
        method, body = ("POST", {"json": self._login}) if self._login else ("GET", {})
        token = self._call(method, "/auth/token", **body)
        self._http.headers["Authorization"] = f"Bearer {token['access_token']}"

    def asset_id(self, uri: str) -> int:
        """The id of the asset with exactly this URI (the API's filter is a pattern: matches are narrowed here)."""
        found = self._call("GET", "/api/v2/assets", params={"uri_pattern": uri, "limit": 100})["assets"]
        exact = [asset["id"] for asset in found if asset["uri"] == uri]
        if not exact:
            raise AirflowUnavailable(f"Airflow knows no asset {uri!r} (are the DAGs parsed?)")
        return exact[0]

    def send_asset_event(self, uri: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Record an event of the asset, as a producing task would; DAGs scheduled on it are queued."""
        if "Authorization" not in self._http.headers:
            self.authenticate()
        body = {"asset_id": self.asset_id(uri), "extra": extra}
        return self._call("POST", "/api/v2/assets/events", json=body)


STRUCTLOG_LINE = re.compile(r"^\S+ \[(?P<level>\w+)\s*\] (?P<message>.*?)(?: \[[\w.]+\])?(?: loc=\S+)?\s*$")


def readable(line: str) -> str:
    """A task log line as a person reads it: ``message`` (``LEVEL: message`` above info), without the
    timestamp and logger Airflow's structured log adds."""
    match = STRUCTLOG_LINE.match(line.rstrip())
    if match is None:
        return line.rstrip()
    level = match["level"].upper()
    return match["message"] if level in ("INFO", "DEBUG") else f"{level}: {match['message']}"


class DagRunFailed(RuntimeError):
    """``airflow dags test`` ended with a failed run; the message names the DAG and where its log is."""


class LocalAirflow:
    """Airflow on this machine with no server to start: metadata in SQLite under ``<state>/airflow``, each DAG
    run with ``airflow dags test`` (all its tasks in one process), the repository's ``dags/`` as DAGs folder.

    What ``make demo`` uses, and what a person can type to try a DAG (docs/operations.md). Task logs go to
    ``<state>/airflow/runs/<dag>.log``; the lines of the service's own loggers and of task states are echoed.
    """

    ECHOED = ("services.", "r2ec.", "Marking task as", "Task failed", "ERROR", "refused")

    def __init__(self, settings: Settings, dags: Path, env: dict[str, str] | None = None) -> None:
        self.home = settings.root / "airflow"
        self.binary = Path(sys.executable).with_name("airflow")
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "R2EC_HOME": str(settings.root),
            "R2EC_DATASET": settings.dataset,
            "R2EC_PROGRESS": "false",
            **(env or {}),
        }

    def migrate(self) -> None:
        """Create or upgrade the metadata database (idempotent)."""
        self.home.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(self.binary), "db", "migrate"], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise DagRunFailed(f"airflow db migrate failed: {(done.stdout + done.stderr)[-1500:]}")

    def test(
        self,
        dag_id: str,
        logical_date: datetime | None = None,
        conf: dict[str, Any] | None = None,
        echo: Callable[[str], None] = print,
    ) -> Path:
        """Run ``dag_id`` once to the end; returns its log file, raises :class:`DagRunFailed` if the run failed."""
        command = [str(self.binary), "dags", "test", dag_id]
        if logical_date is not None:
            command.append(logical_date.isoformat())
        if conf:
            command += ["--conf", json.dumps(conf)]
        log_file = self.home / "runs" / f"{dag_id}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with (
            log_file.open("w") as log,
            subprocess.Popen(
                command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            ) as process,
        ):
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                if any(marker in line for marker in self.ECHOED):
                    echo("   " + readable(line))
        if process.returncode != 0:
            raise DagRunFailed(f"{dag_id} failed (exit {process.returncode}); its log: {log_file}")
        return log_file
