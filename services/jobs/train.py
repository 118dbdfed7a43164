"""Job: train R²ec with a recipe's phases on a dataset's samples; a phase's best adapter lands in ``<out>/<mode>/best``.

The model the README reports is trained by ``r2ec train --recipe smollm2-cpu`` (``r2ec.training.recipes``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from r2ec.data.samples import PreparedData, prepare
from r2ec.modeling.recommender import FrozenLayerCache, R2ecRecommender
from r2ec.training.logging import FanOutLogger, JsonlLogger, LogLinesLogger, MetricsLogger, PhaseLogger
from r2ec.training.recipes import Recipe
from r2ec.training.trainer import R2ecTrainer, phase_model_config
from services.datastore import load_prepared, read_dataset
from services.jobs.resources import peak_rss_mb
from services.lake import read_clean_log
from services.settings import Settings

log = logging.getLogger(__name__)
SAMPLE_SOURCES = ("prepared", "feast")


def training_data(settings: Settings, dataset: str | None, samples_from: str) -> tuple[PreparedData, pd.DataFrame]:
    """The splits to train and gate on, and the log they were built from.

    ``prepared``: the prepared dataset's tables, in memory (the paper's protocol, benchmarks). ``feast``: the
    lake's clean log through Feast's training feature service (point in time), what scheduled retraining uses,
    so that a model learns from what ingest landed and features serve.
    """
    if samples_from not in SAMPLE_SOURCES:
        raise ValueError(f"samples_from must be one of {', '.join(SAMPLE_SOURCES)}, not {samples_from!r}")
    name = dataset or settings.dataset
    interactions, items = read_dataset(settings, name)
    if samples_from == "prepared":
        return prepare(name, interactions, items, settings.max_history), interactions
    from services import features

    clean = read_clean_log(settings, name)
    if clean.empty:
        raise ValueError(f"the lake holds no clean interactions of {name!r}: ingest a log first")
    return features.training_data(settings, name, clean, items), clean


def run(
    settings: Settings,
    run_id: str,
    recipe: Recipe,
    out_dir: Path | None = None,
    dataset: str | None = None,
    init_checkpoint: Path | None = None,
    data: PreparedData | None = None,
    model_changes: dict[str, Any] | None = None,
    extra_logger: MetricsLogger | None = None,
) -> dict[str, Any]:
    """Run the recipe's phases; return per phase the budget and best validation NDCG@10, and the final checkpoint.

    The model is the recipe's, or with ``init_checkpoint`` that checkpoint's own (adapter and config), with
    ``model_changes`` (``R2ecConfig`` fields such as ``backbone`` or ``dtype``) applied on top in both cases.
    The samples are ``data``'s, or the prepared ``dataset``'s.
    """
    started = time.perf_counter()
    out_dir = out_dir or settings.root / "runs" / run_id
    torch.manual_seed(recipe.phases[0].seed)
    data = data or load_prepared(settings, dataset)
    cache = settings.root / "cache"
    if init_checkpoint is not None:
        recommender = R2ecRecommender.load(init_checkpoint, cache)
        recommender.config = replace(recommender.config, **(model_changes or {}))
    else:
        recommender = R2ecRecommender.create(replace(recipe.model, **(model_changes or {})), cache)
    rows, states = recommender.item_prompt_ids(data.items), settings.item_states_dir
    items = FrozenLayerCache.persisted(recommender, rows, states) if states else FrozenLayerCache(recommender, rows)
    phases: dict[str, Any] = {}
    best_dir: Path | None = None
    for phase in recipe.phases:
        if best_dir is not None:
            recommender.load_adapter_weights(best_dir)
        recommender.config = phase_model_config(recommender.config, phase)
        phase_dir = out_dir / phase.mode
        loggers: list[MetricsLogger] = [JsonlLogger(phase_dir / "metrics.jsonl")]
        if extra_logger is not None:
            loggers.append(PhaseLogger(extra_logger, phase.mode))
        if not settings.show_progress:  # no bar: the log shows progress instead
            loggers.append(LogLinesLogger(log, f"{recipe.label} {phase.mode}"))
        logger = FanOutLogger(*loggers)
        log.info("%s: %s phase on %s (%d training samples)", recipe.label, phase.mode, data.name, len(data.train))
        phase_started = time.perf_counter()
        result = R2ecTrainer(recommender, data, phase, logger, settings.show_progress, items).train(phase_dir)
        best_dir = result.best_dir
        phases[phase.mode] = {
            "best_valid_ndcg@10": result.best_valid_ndcg10,
            "checkpoint": str(result.best_dir),
            "budget": result.budget,
            "wall_s": round(time.perf_counter() - phase_started, 1),
            "train_config": asdict(phase),
        }
        log.info("%s: %s best validation NDCG@10 %.4f", recipe.label, phase.mode, result.best_valid_ndcg10)
    summary = {
        "run_id": run_id,
        "recipe": recipe.label,
        "dataset": data.name,
        "init": str(init_checkpoint) if init_checkpoint else "fresh LoRA",
        "checkpoint": str(best_dir),
        "best_valid_ndcg@10": phases[recipe.phases[-1].mode]["best_valid_ndcg@10"],
        "phases": phases,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2, default=str) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
