"""
### recpo_retrain — weekly (Sunday 03:00 UTC) and on demand

Continues training from a registered version with the headline recipe (`smollm2-cpu`,
`r2ec.training.recipes`), then registers the result as a challenger with its gate:

1. **train** (`services.jobs.pipeline.retrain`): resolves **base** (`champion` or a version number) once,
   fetches its checkpoint from MLflow (`services.registry.checkpoint_of`) and runs the recipe's **phases** on
   it over every sample of the clean lake, read through Feast's `r2ec_training` feature service (each history
   as of its target's time; refresh it with `features_materialize` first), inside a tracked MLflow run
   (`services.jobs.model_admin.train_and_register`): params, curves, dataset, wall time and peak memory. The
   checkpoint is registered as a new version with alias `challenger`, scored on the seeded validation and
   test subsets, and gated against the champion on the same split (tags `gate`, `gate_detail`, `trained_from`,
   `train_run_id`). A retried task finds the version its run registered and does not train again.
2. **promote** (`services.jobs.pipeline.promote_trained`): only when **auto_promote** is on and the gate
   passed, moves `champion` and sends the asset event `r2ec://registry/champion` (then `items_reindex` runs);
   otherwise the task is skipped and the version waits for `model_promote` or the MLflow UI.

Budget: **max_minutes** and **max_steps** cap every phase (empty = the recipe's own: 60 + 12 minutes on two CPU
cores); **eval_samples** caps the validation subset of the early-stopping evaluations.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

CHAMPION = Asset(name="r2ec_champion", uri="r2ec://registry/champion")


@dag(
    dag_id="recpo_retrain",
    schedule=CronTriggerTimetable("0 3 * * 0", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["r2ec", "training", "mlflow"],
    default_args={
        "owner": "r2ec",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=6),
    },
    params={
        "phases": Param(
            "recpo",
            enum=["recpo", "contrastive", "contrastive,recpo"],
            title="Phases",
            description="Phases of the headline recipe to run from the base checkpoint.",
        ),
        "base": Param(
            "champion",
            type="string",
            pattern=r"^(champion|challenger|[0-9]+)$",
            title="Base version",
            description="Continue from this version's checkpoint: champion, challenger or a version number.",
        ),
        "max_minutes": Param(
            None, type=["null", "number"], minimum=0, title="Max minutes per phase", description="Empty = recipe's."
        ),
        "max_steps": Param(
            None, type=["null", "integer"], minimum=1, title="Max steps per phase", description="Empty = recipe's."
        ),
        "eval_samples": Param(
            None, type=["null", "integer"], minimum=1, title="Evaluation samples", description="Empty = recipe's."
        ),
        "auto_promote": Param(
            False, type="boolean", title="Auto-promote", description="Make the new version champion if its gate passed."
        ),
    },
)
def recpo_retrain() -> None:
    @task
    def train(params=None, run_id=None) -> dict:
        """Continue the recipe from the base version; register and gate a challenger."""
        from services.jobs import pipeline

        options = {key: params[key] for key in ("base", "phases", "max_minutes", "max_steps", "eval_samples")}
        try:
            return pipeline.xcom_summary(pipeline.retrain(pipeline.load_settings(), run_id, **options))
        except pipeline.Refused as refusal:
            raise AirflowFailException(str(refusal)) from refusal

    @task(outlets=[CHAMPION])
    def promote(trained: dict, params=None, run_id=None) -> dict:
        """Champion moves only with auto_promote and a passed gate; else skipped (no champion event)."""
        from services.jobs import pipeline

        result = pipeline.promote_trained(pipeline.load_settings(), run_id, trained, params["auto_promote"])
        if not result["promoted"]:
            raise AirflowSkipException(result["reason"])
        return result

    promote(train())


recpo_retrain()
