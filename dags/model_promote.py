"""
### model_promote — move `champion` to a registered version (manual)

Trigger it with the form: **version** (a number, or an alias such as `challenger`) and **force**.
`services.jobs.pipeline.promote` resolves the version, refuses one whose `gate` tag is `failed` unless
`force` is set (the task fails at once, without retries, and says why), then moves the MLflow alias
`champion` (`services.registry.promote`; the version remembers the one it replaced, so
`r2ec model rollback` can undo it).

On success the asset `r2ec://registry/champion` gets an event, which starts `items_reindex`. The next
`recommend_nightly` run serves the new version.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

CHAMPION = Asset(name="r2ec_champion", uri="r2ec://registry/champion")


@dag(
    dag_id="model_promote",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["r2ec", "registry", "mlflow"],
    default_args={
        "owner": "r2ec",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "execution_timeout": timedelta(minutes=15),
    },
    params={
        "version": Param(
            type="string",
            minLength=1,
            title="Version",
            description="Registered version to serve: a number, or an alias such as challenger.",
        ),
        "force": Param(
            False, type="boolean", title="Force", description="Promote even though the version's gate failed."
        ),
    },
)
def model_promote() -> None:
    @task(outlets=[CHAMPION])
    def promote(params=None, run_id=None) -> dict:
        """Move alias `champion` to the version (a failed gate needs force)."""
        from services.jobs import pipeline

        try:
            return pipeline.promote(pipeline.load_settings(), run_id, params["version"], params["force"])
        except pipeline.Refused as refusal:
            raise AirflowFailException(str(refusal)) from refusal

    promote()


model_promote()
