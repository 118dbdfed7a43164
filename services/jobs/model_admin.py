"""Job: train into a tracked MLflow run, then register the checkpoint, score it, gate it (promotion: registry)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from r2ec.data.samples import PreparedData, Samples
from r2ec.training.recipes import Recipe
from services import registry
from services.datastore import read_dataset
from services.jobs.resources import inference_model
from services.settings import Settings

log = logging.getLogger(__name__)


def evaluation_split(settings: Settings, data: PreparedData, split: str) -> tuple[Samples, np.ndarray, str]:
    """The seeded subset a split is scored on, its overall-metrics mask, and a key naming exactly those rows.

    Two versions are comparable only when their keys are equal: same dataset, rows and targets.
    """
    from r2ec.evaluation.evaluator import evaluation_subset

    samples, overall = evaluation_subset(data.split(split), settings.gate_samples, settings.seed)
    digest = hashlib.sha256()
    for array in (samples.user_id.astype(str), samples.target, samples.target_time, samples.history):
        digest.update(np.ascontiguousarray(array).tobytes())
    return samples, overall, f"{data.name}/{split}/{len(samples)}/{digest.hexdigest()[:12]}"


def score_checkpoint(
    settings: Settings, checkpoint: Path, data: PreparedData, splits: tuple[str, ...] = ("valid",)
) -> dict[str, float]:
    """``{split}_ndcg@10`` etc. of a checkpoint on each split's seeded subset (the catalogue is encoded once)."""
    from r2ec.evaluation.evaluator import evaluate

    recommender = inference_model(settings, checkpoint)
    recommender.set_catalogue(data.items, states=settings.item_states_dir)
    metrics: dict[str, float] = {}
    for split in splits:
        samples, overall, _ = evaluation_split(settings, data, split)
        log.info("scoring %s on %d %s samples", checkpoint.name, len(samples), split)
        report = evaluate(recommender, samples, batch_size=32, overall=overall)
        metrics.update({f"{split}_{k}": v for k, v in report.overall.items()})
    return metrics


def champion_score(settings: Settings, data: PreparedData, split_key: str) -> tuple[Any, float | None]:
    """The champion and its gate metric on ``split_key``: from its tags when scored on that split, else re-scored."""
    champion = registry.alias_version(settings, registry.CHAMPION)
    if champion is None:
        return None, None
    tag = registry.metric_key(f"valid_{settings.gate_metric}")
    if champion.tags.get(registry.TAG_GATE_SPLIT) == split_key and tag in champion.tags:
        return champion, float(champion.tags[tag])
    with registry.checkpoint_of(settings, champion) as checkpoint:
        return champion, score_checkpoint(settings, checkpoint, data)[f"valid_{settings.gate_metric}"]


def register(settings: Settings, checkpoint: Path, data: PreparedData) -> dict[str, Any]:
    """In the active MLflow run: log and register ``checkpoint``, tag its metrics, gate it, maybe promote it."""
    version = registry.register_checkpoint(settings, checkpoint, data.items)
    metrics = score_checkpoint(settings, checkpoint, data, ("valid", "test"))
    registry.tag_metrics(settings, version, metrics)
    split_key = evaluation_split(settings, data, "valid")[2]
    champion, champion_value = champion_score(settings, data, split_key)
    gate = registry.record_gate(
        settings, version, split_key, metrics[f"valid_{settings.gate_metric}"], champion, champion_value
    )
    promoted = settings.auto_promote and gate.passed
    if promoted:
        registry.promote(settings, version)
    return {
        "model": settings.registry_model_name,
        "version": version,
        "gate": "passed" if gate.passed else "failed",
        "gate_detail": gate.detail,
        "promoted": promoted,
        **metrics,
    }


def train_and_register(
    settings: Settings,
    run_id: str,
    recipe: Recipe,
    out_dir: Path | None = None,
    dataset: str | None = None,
    feature_snapshot: str | None = None,
    samples_from: str = "prepared",
    **train_options: Any,
) -> dict[str, Any]:
    """Train inside an MLflow run (params, curves, dataset, wall time, peak memory), then :func:`register`."""
    from services.jobs import train

    data, interactions = train.training_data(settings, dataset, samples_from)
    with registry.training_run(
        settings, data.name, interactions, feature_snapshot, run_name=run_id, samples_from=samples_from
    ) as mlflow_run:
        registry.MlflowLogger().log_params({"recipe": recipe.to_dict()})
        summary = train.run(
            settings, run_id, recipe, out_dir, data=data, extra_logger=registry.MlflowLogger(), **train_options
        )
        result = register(settings, Path(summary["checkpoint"]), data)
    return {
        "run_id": run_id,
        "mlflow_run_id": mlflow_run,
        **result,
        "samples_from": samples_from,
        "train_samples": len(data.train),
        "train_wall_s": summary["wall_s"],
    }


def register_shipped(
    settings: Settings, run_id: str, model_dir: Path, dataset: str | None = None, promote: bool = False
) -> dict[str, Any]:
    """Register a shipped checkpoint (``models/<name>/``) as a version, with the metrics its card recorded.

    No training and no scoring: the version is tagged with the checkpoint's own metrics and ``gate=shipped``.
    Idempotent: a checkpoint whose adapter is already registered (same digest) is not registered again.
    ``promote`` moves ``champion`` to it.
    """
    if not (model_dir / "r2ec.json").is_file():
        raise ValueError(f"{model_dir} is not an r2ec checkpoint (no r2ec.json)")
    digest = registry.checkpoint_digest(model_dir)
    version = registry.version_with_tag(settings, registry.TAG_DIGEST, digest)
    if version is None:
        interactions, items = read_dataset(settings, dataset)
        with registry.training_run(settings, dataset or settings.dataset, interactions, run_name=run_id):
            version = registry.register_checkpoint(settings, model_dir, items)
        recorded = json.loads((model_dir / "r2ec.json").read_text()).get("metrics", {})
        registry.tag_metrics(settings, version, {k: v for k, v in recorded.items() if isinstance(v, int | float)})
        registry.tag_version(
            settings,
            version,
            {registry.TAG_DIGEST: digest, registry.TAG_GATE: "shipped", registry.TAG_GATE_DETAIL: f"from {model_dir}"},
        )
    result = {"model": settings.registry_model_name, "version": version, "checkpoint": str(model_dir)}
    if promote:
        result["champion"] = registry.promote(settings, version)["champion"]
    return result
