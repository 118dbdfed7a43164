"""
### recommend_nightly — every user's rationale and top-K items, published atomically

Daily at 02:00 UTC, and on demand with the form (**users**: `all`, a number N for the first N users, or a file
of user ids; **shards**: how many mapped tasks score the users, default 2).

1. **plan** makes sure the item index serves `champion` (a no-op unless a new version was promoted; done once
   here so that parallel shards never build it twice) and lists the shards.
2. **score** — one mapped task per shard (`.partial(...).expand(shard=...)`) — calls
   `services.jobs.recommend.run(settings, run_id, users, shard=(i, n), as_of=...)` with the **Airflow run
   id**: each resolves `champion` (refreshing the item index first when it serves another version, so a
   promotion made in the MLflow UI takes effect by itself), reads histories from Feast as of the run's logical
   date (a manual run without one: its `run_after`; **as_of** in the form: that time, to redo a past night),
   reasons, retrieves top-K with seen items excluded and writes its users in chunks.
3. **publish** calls `services.jobs.recommend.publish`: checks (K distinct items per user, every user once,
   rationale quality) and one transaction that makes this run the one `recommendations_current` shows; the
   asset `r2ec://recstore/recommendations` gets an event.

Idempotent for the run id: a cleared or retried shard skips the users already written (a published run is
left as it is), and every shard uses the same `as_of`, so rows are never duplicated or mixed. A refused run
(failed checks, degenerate rationales) fails **publish** without retries; the previous run stays published.

With Qdrant in local mode (the embedded world) the store admits one process at a time: run the shards one
after the other there (`AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=1`); against a Qdrant server they run in
parallel.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

RECOMMENDATIONS = Asset(name="r2ec_recommendations", uri="r2ec://recstore/recommendations")


@dag(
    dag_id="recommend_nightly",
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["r2ec", "recommendations", "nightly"],
    default_args={
        "owner": "r2ec",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=8),
    },
    params={
        "users": Param(
            "all",
            type="string",
            minLength=1,
            title="Users",
            description="all, the first N users by id, or a file with one user id per line.",
        ),
        "shards": Param(2, type="integer", minimum=1, maximum=256, title="Shards", description="Mapped scoring tasks."),
        "as_of": Param(
            None,
            type=["null", "string"],
            title="As of",
            description="Histories as of this ISO time (a past night again). Empty = the run's logical date.",
        ),
    },
)
def recommend_nightly() -> None:
    @task
    def plan(params=None, run_id=None) -> list[list[int]]:
        """Make sure alias `items` serves the champion (once, before the shards, so they never race to build
        it), then list the shards [[0, n], [1, n], ...], one mapped scoring task each."""
        from services.jobs import index_refresh, pipeline

        shards = pipeline.shards(params["shards"])
        index_refresh.run(pipeline.load_settings(), run_id)
        return shards

    @task(map_index_template="shard {{ shard_label }}")
    def score(shard: list[int], users: str, params=None, run_id=None, dag_run=None) -> dict:
        """Score and write this shard's users under the Airflow run id."""
        from services.jobs import pipeline, recommend

        get_current_context()["shard_label"] = f"{shard[0]}/{shard[1]}"
        try:  # the same for every shard and every retry of the run
            as_of = pipeline.night_as_of(params["as_of"], dag_run.logical_date or dag_run.run_after)
        except pipeline.Refused as refusal:
            raise AirflowFailException(str(refusal)) from refusal
        summary = recommend.run(pipeline.load_settings(), run_id, users, shard=(shard[0], shard[1]), as_of=as_of)
        return pipeline.xcom_summary(summary)

    @task(outlets=[RECOMMENDATIONS])
    def publish(scored: list[dict], params=None, run_id=None) -> dict:
        """Check the whole run and publish it in one transaction."""
        from services.jobs import pipeline, recommend

        try:
            published = recommend.publish(pipeline.load_settings(), run_id, params["users"])
        except recommend.RunRefused as refusal:
            raise AirflowFailException(str(refusal)) from refusal
        return {"run_id": run_id, "shards": len(scored), **pipeline.xcom_summary(published)}

    publish(score.partial(users="{{ params.users }}").expand(shard=plan()))


recommend_nightly()
