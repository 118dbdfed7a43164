"""
### features_materialize — Feast features over the newly landed interactions

Runs whenever `interactions_validate` lands a day (asset `r2ec://lake/interactions`; asset-triggered runs have
no data interval, so each job is keyed on the Airflow run id).

1. **apply** (`services.jobs.features.apply`): rewrite Feast's source tables from the clean lake and the
   catalogue, then apply the definitions of `feature_repo/` (entities, views, the training and scoring
   feature services).
2. **materialize** (`services.jobs.features.materialize`): load the new feature rows into the online store,
   incrementally after the first load.

Both steps are idempotent: a re-run rewrites the same tables and loads nothing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, dag, task

INTERACTIONS = Asset(name="r2ec_interactions", uri="r2ec://lake/interactions")


@dag(
    dag_id="features_materialize",
    schedule=[INTERACTIONS],
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["r2ec", "features", "feast"],
    default_args={
        "owner": "r2ec",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=1),
    },
)
def features_materialize() -> None:
    @task
    def apply(run_id=None) -> dict:
        """Source tables from the lake, then `feast apply` of the definitions."""
        from services.jobs import features, pipeline

        return pipeline.xcom_summary(features.apply(pipeline.load_settings(), run_id))

    @task
    def materialize(run_id=None) -> dict:
        """New feature rows into the online store."""
        from services.jobs import features, pipeline

        return pipeline.xcom_summary(features.materialize(pipeline.load_settings(), run_id))

    apply() >> materialize()


features_materialize()
