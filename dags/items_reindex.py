"""
### items_reindex — item vectors of the new champion

Runs whenever `champion` moves through a DAG (asset `r2ec://registry/champion`, sent by `model_promote` and by
`recpo_retrain` when it auto-promotes). `services.jobs.index_refresh.run` resolves `champion` once, encodes the
catalogue with that version into a new Qdrant collection `items__v{version}__{template}__{time}`, verifies
it (count and a probe query) and moves alias `items` in one call; the previous collections stay for rollback
(`R2EC_INDEX_KEEP_COLLECTIONS`).

Idempotent: when `items` already serves this version, template and catalogue, nothing is encoded. A promotion
made elsewhere (the MLflow UI, `r2ec model promote`) needs no event: `recommend_nightly` checks the index at
its start and refreshes it first when it serves another version.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, dag, task

CHAMPION = Asset(name="r2ec_champion", uri="r2ec://registry/champion")


@dag(
    dag_id="items_reindex",
    schedule=[CHAMPION],
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["r2ec", "index", "qdrant"],
    default_args={
        "owner": "r2ec",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
    },
)
def items_reindex() -> None:
    @task
    def reindex(run_id=None) -> dict:
        """Encode the catalogue with the champion and switch alias `items` to it."""
        from services.jobs import index_refresh, pipeline

        return pipeline.xcom_summary(index_refresh.run(pipeline.load_settings(), run_id))

    reindex()


items_reindex()
