"""Job behind ``make demo``: one night of the service run by Airflow on embedded defaults (no server to start).

ML-100k's log is dropped into the inbox as one file per day; then, each step a DAG run with ``airflow dags test``
(``services.orchestrator.LocalAirflow``, metadata in SQLite under ``<state>/airflow``):

1. ``interactions_validate`` catches up the backlog of daily files (Great Expectations, lake, quarantine);
2. ``features_materialize`` applies the Feast definitions and loads the online store;
3. the shipped model is registered in MLflow as ``champion`` (what ``r2ec model register --promote`` does) and
   ``items_reindex`` builds its item index;
4. ``recpo_retrain`` continues RecPO from the champion for a few steps on the samples Feast serves, registers
   and gates a challenger, promotes it if its gate passed, and ``items_reindex`` follows the champion;
5. ``recommend_nightly`` writes every chosen user's rationale and top items and publishes the run.

ML-100k ends in April 1998, so the night runs as of the day after its last event (histories older than the
Feast view's ttl would be served as none today). Every step is idempotent: a second ``make demo`` lands
nothing twice and reuses the champion and index; it retrains again (a new challenger) unless told not to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.datastore import read_dataset
from services.jobs import features as feature_jobs
from services.jobs import index_refresh, model_admin, pipeline, prepare_data
from services.lake import read_clean_log
from services.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = REPO / "models" / "r2ec-recpo-ml100k"
DEMO_DATASET = "ml-100k"
RETRAIN_EVAL_SAMPLES = 64  # validation rows of the retrain's early-stopping checks (the gate has its own)


def drop_daily_files(settings: Settings, dataset: str = DEMO_DATASET) -> list[Path]:
    """Write the prepared log into the inbox as ``<dataset>-YYYY-MM-DD.parquet``, one file per day (kept if there).

    What a data producer does every day, all at once: the daily DAG picks each file by the day in its name.
    """
    if not settings.data_dir(dataset).joinpath("items.parquet").exists():
        prepare_data.run(settings, "demo-data", dataset)
    interactions, _ = read_dataset(settings, dataset)
    inbox = settings.inbox(dataset)
    inbox.mkdir(parents=True, exist_ok=True)
    files = []
    for day, rows in interactions.groupby(interactions["event_time"].dt.strftime("%Y-%m-%d"), sort=True):
        path = inbox / f"{dataset}-{day}.parquet"
        if not path.exists():
            rows.to_parquet(path, index=False)
        files.append(path)
    return files


def night_of(files: list[Path]) -> tuple[datetime, datetime]:
    """The first day of the daily files and the midnight after the last one (when the night's DAGs run)."""
    days = sorted(day for day in map(pipeline.day_of, files) if day is not None)
    first = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    return first, datetime.combine(days[-1], datetime.min.time(), tzinfo=UTC) + timedelta(days=1)


def prepare_world(settings: Settings, run_id: str, model_dir: Path = SHIPPED_MODEL) -> dict[str, Any]:
    """The world the nightly job needs with the shipped model as champion, built by calling the jobs the DAGs
    call, without Airflow and without retraining (the nightly benchmark's world)."""
    files = drop_daily_files(settings)
    first, night = night_of(files)
    return {
        "ingest": pipeline.ingest_interval(settings, run_id, first, night, DEMO_DATASET),
        "features": feature_jobs.apply(settings, run_id, DEMO_DATASET),
        "model": model_admin.register_shipped(settings, run_id, model_dir, DEMO_DATASET, promote=True),
        "index": index_refresh.run(settings, run_id, None, DEMO_DATASET),
    }


def run(
    settings: Settings,
    run_id: str,
    users: str = "100",
    retrain_steps: int = 8,
    gate_samples: int = 100,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The night through Airflow; returns the published run. ``retrain_steps`` 0 skips the retrain."""
    from services.orchestrator import DagRunFailed, LocalAirflow
    from services.recstore import SCORED, RecStore

    started = time.perf_counter()
    settings = settings.model_copy(update={"dataset": DEMO_DATASET})
    steps = 7 if retrain_steps > 0 else 6

    def step(number: int, text: str) -> None:
        echo(f"\n== {number}/{steps} {text}   [{time.perf_counter() - started:5.0f} s]")

    step(1, f"ML-100k's log as daily files in {settings.inbox()}")
    files = drop_daily_files(settings)
    first, night = night_of(files)
    echo(f"   {len(files)} files, {first:%Y-%m-%d} .. {night - timedelta(days=1):%Y-%m-%d}")
    airflow = LocalAirflow(settings, REPO / "dags", env={"R2EC_GATE_SAMPLES": str(gate_samples)})
    airflow.migrate()
    echo(f"   Airflow home {airflow.home} (SQLite metadata; task logs under {airflow.home / 'runs'})")

    step(2, "interactions_validate: validate every daily file, land clean rows, quarantine bad ones")
    airflow.test("interactions_validate", conf={"catch_up_from": f"{first:%Y-%m-%d}"}, echo=echo)
    landed = read_clean_log(settings)
    if landed.empty:
        raise DagRunFailed(f"interactions_validate landed nothing; its log: {airflow.home / 'runs'}")
    echo(f"   lake: {len(landed)} clean rows of {landed['user_id'].nunique()} users")
    step(3, "features_materialize: Feast apply and materialize")
    airflow.test("features_materialize", echo=echo)
    step(4, f"champion: the shipped model ({SHIPPED_MODEL.name}), then items_reindex")
    shipped = model_admin.register_shipped(settings, run_id, SHIPPED_MODEL, DEMO_DATASET, promote=True)
    echo(f"   registered as v{shipped['version']}; champion v{shipped['champion']}")
    airflow.test("items_reindex", echo=echo)
    if retrain_steps > 0:
        step(5, f"recpo_retrain: {retrain_steps} RecPO steps from the champion, gate, promote if it passed")
        conf = {"max_steps": retrain_steps, "eval_samples": RETRAIN_EVAL_SAMPLES, "auto_promote": True}
        airflow.test("recpo_retrain", conf=conf, echo=echo)
        airflow.test("items_reindex", echo=echo)
    step(steps - 1, f"recommend_nightly for {users} users as of {night:%Y-%m-%d}")
    airflow.test("recommend_nightly", conf={"users": users, "shards": 1, "as_of": night.isoformat()}, echo=echo)

    step(steps, "what downstream apps read")
    store = RecStore.from_settings(settings)
    published = store.current_run()
    if published is None:
        raise DagRunFailed(f"recommend_nightly published nothing; its log: {airflow.home / 'runs'}")
    echo(
        f"   run {published['run_id']}: model v{published['model_version']}, {published['users_scored']} users "
        f"scored, {published['users_skipped']} skipped, {published['rows']} rows"
    )
    scored = [u["user_id"] for u in store.run_users(published["run_id"]) if u["status"] == SCORED]
    for user_id in scored[:3]:
        shown = store.user_recommendations(user_id)
        echo(f"\n-- user {user_id}: history ends with {', '.join(h['title'] for h in shown['history'][-3:])}")
        echo(f"   rationale: {shown['rationale']}")
        echo("   top 5: " + "; ".join(f"{i['rank']}. {i['title']}" for i in shown["items"][:5]))
    echo(
        f"\nDone in {time.perf_counter() - started:.0f} s. Look further:\n"
        f"  SQL:      sqlite3 {settings.recstore_uri.removeprefix('sqlite:///')} "
        "'SELECT user_id, rank, title, score FROM recommendations_current LIMIT 20'\n"
        "  API:      .venv/bin/r2ec serve   (then http://127.0.0.1:8000/ for the explorer, /docs for the API)\n"
        f"  MLflow:   .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_uri}\n"
        f"  Airflow:  AIRFLOW_HOME={airflow.home} AIRFLOW__CORE__DAGS_FOLDER={REPO / 'dags'} "
        ".venv/bin/airflow standalone   (docs/operations.md)"
    )
    return published
