"""Job behind ``make demo``: the service's night end to end on embedded defaults (no servers to start).

ML-100k ends in April 1998, so the night is run as of the day after its last event (histories older than the
Feast view's ttl would be served as none today).

Steps, each idempotent (a second ``make demo`` reuses what the first built): prepare ML-100k, land its log in
the lake (validated), apply the Feast definitions, register the shipped model and make it ``champion``, build the
item index, publish nightly recommendations with rationales, score the baselines; then print a few users' lists
and where to look further.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from services.datastore import read_dataset
from services.formatting import format_result
from services.jobs import evaluate, index_refresh, ingest, model_admin, prepare_data, recommend
from services.jobs import features as feature_jobs
from services.lake import clean_dir, read_clean_log
from services.settings import Settings

log = logging.getLogger(__name__)
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "r2ec-recpo-ml100k"
DEMO_DATASET = "ml-100k"


def prepare_world(settings: Settings, run_id: str, model_dir: Path = SHIPPED_MODEL) -> dict[str, Any]:
    """Everything the nightly job needs, built once: data, lake, Feast, a champion and its item index."""
    steps: dict[str, Any] = {}
    if not settings.data_dir(DEMO_DATASET).joinpath("items.parquet").exists():
        steps["data"] = prepare_data.run(settings, run_id, DEMO_DATASET)
    if not any(clean_dir(settings, DEMO_DATASET).glob("day=*/*.parquet")):
        interactions, _ = read_dataset(settings, DEMO_DATASET)
        inbox = settings.root / "inbox" / DEMO_DATASET
        inbox.mkdir(parents=True, exist_ok=True)
        interactions.to_parquet(inbox / "ml-100k.parquet", index=False)
        steps["ingest"] = ingest.run(settings, run_id, inbox / "ml-100k.parquet", DEMO_DATASET)
    steps["features"] = feature_jobs.apply(settings, run_id, DEMO_DATASET)
    steps["model"] = model_admin.register_shipped(settings, run_id, model_dir, DEMO_DATASET, promote=True)
    steps["index"] = index_refresh.run(settings, run_id, None, DEMO_DATASET)
    return steps


def run(settings: Settings, run_id: str, users: str = "100", echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the world, publish recommendations for ``users`` under ``run_id``, score the baselines."""
    echo("== setting up: data, lake, Feast, champion, item index")
    world = prepare_world(settings, run_id)
    model, index = world["model"], world["index"]
    echo(f"champion: v{model['version']} ({model['checkpoint']}); item index {index['collection']}")
    as_of = (read_clean_log(settings, DEMO_DATASET)["event_time"].max() + pd.Timedelta(days=1)).to_pydatetime()
    echo(f"== nightly recommendations for {users} users as of {as_of:%Y-%m-%d} (run {run_id})")
    summary = recommend.run(settings, run_id, users, as_of=as_of, dataset=DEMO_DATASET)
    echo(format_result(summary))
    from services.recstore import SCORED, RecStore

    store = RecStore.from_settings(settings)
    scored = [u["user_id"] for u in store.run_users(run_id) if u["status"] == SCORED]
    for user_id in scored[:3]:
        shown = store.user_recommendations(user_id)
        echo(f"\n-- user {user_id}: history ends with {', '.join(h['title'] for h in shown['history'][-3:])}")
        echo(f"   rationale: {shown['rationale']}")
        echo("   top 5: " + "; ".join(f"{i['rank']}. {i['title']}" for i in shown["items"][:5]))
    for model in evaluate.BASELINES:
        echo(f"\n== baseline {model}")
        echo(format_result(evaluate.run(settings, f"{run_id}-{model}", model, DEMO_DATASET)))
    echo(
        "\nLook further:\n"
        f"  SQL:      sqlite3 {settings.recstore_uri.removeprefix('sqlite:///')} "
        "'SELECT user_id, rank, title, score FROM recommendations_current LIMIT 20'\n"
        "  API:      .venv/bin/r2ec serve   (then http://127.0.0.1:8000/ for the explorer, /docs for the API)\n"
        f"  MLflow:   .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_uri}\n"
        "  Airflow:  docs/operations.md (airflow standalone or airflow dags test)"
    )
    return summary
