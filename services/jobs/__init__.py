"""Jobs: plain functions ``run(settings, run_id, ...) -> summary`` that the CLI and the DAGs both call.

The run id names one execution (the Airflow run id under a DAG); a job run twice with the same id ends in the
same state. Jobs report progress with ``logging`` (and a bar at a terminal) and return a small JSON-able summary.
"""

from __future__ import annotations

from datetime import UTC, datetime


def new_run_id(job: str) -> str:
    """A run id for a job started by hand: ``<job>-<UTC time>``."""
    return f"{job}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
