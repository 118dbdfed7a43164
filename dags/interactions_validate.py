"""
### interactions_validate — the daily gate of the interaction log

Every day at 00:00 UTC, for the day that just ended (a `CronDataIntervalTimetable`: the run's data interval is
that day), each log file dropped into the inbox `<R2EC_INBOX_DIR or <state>/inbox>/<dataset>/` whose name carries
the day (`2024-06-01.csv`, `ratings-2024-06-01.parquet`, `.jsonl` …) is validated with the Great Expectations
suite and landed in the lake (`services.jobs.ingest`): clean rows by day, bad rows in quarantine with reasons.

- **A refused batch** (more bad rows than `R2EC_INGEST_MAX_BAD_FRACTION`) or an unreadable file fails the task
  at once, without retries, with the refusal in the task log; it lands nothing. The other files of the day
  still land. Fix or replace the file (a new file is a new batch), then clear the task.
- **No file for the day**: the task is skipped and no asset event is sent.
- **Re-running a day** lands nothing twice: a batch is named by the hash of its bytes, and rows another batch
  already landed count as duplicates.
- On success the asset `r2ec://lake/interactions` gets an event, which starts `features_materialize`.

Files are picked by the day in their name, not by arrival time, so a backfill of an old interval ingests the
same files as the original run did. Files without a day in their name are ignored (use `r2ec ingest FILE`).

**Catching up a backlog** (a first load, days the DAG was paused): trigger it with **catch_up_from** set to the
first day; that one run ingests the files of every day from then to the end of its interval, each file still
its own batch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

INTERACTIONS = Asset(name="r2ec_interactions", uri="r2ec://lake/interactions")


@dag(
    dag_id="interactions_validate",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["r2ec", "lake", "validation"],
    default_args={
        "owner": "r2ec",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=1),
    },
    params={
        "catch_up_from": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Catch up from",
            description="Also ingest the files of every day from this one (YYYY-MM-DD) on. Empty = the interval only.",
        ),
    },
)
def interactions_validate() -> None:
    @task(outlets=[INTERACTIONS])
    def ingest(data_interval_start=None, data_interval_end=None, params=None, run_id=None) -> dict:
        """Validate and land the inbox files of the data interval (one batch per file)."""
        from services.jobs import pipeline

        start, end = pipeline.as_utc(data_interval_start), pipeline.as_utc(data_interval_end)
        try:
            start = pipeline.catch_up_start(start, params["catch_up_from"])
            summary = pipeline.ingest_interval(pipeline.load_settings(), run_id, start, end)
        except pipeline.Refused as refusal:
            raise AirflowFailException(str(refusal)) from refusal
        if not summary["files"]:
            raise AirflowSkipException(
                f"no log file of a day in [{start:%Y-%m-%d}, {end:%Y-%m-%d}) in {summary['inbox']}"
            )
        return pipeline.xcom_summary(summary)

    ingest()


interactions_validate()
