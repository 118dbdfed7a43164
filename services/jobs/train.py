"""Job: train R²ec (RecPO or contrastive) on a prepared dataset; the best adapter lands in ``out_dir/best``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from r2ec.modeling.backbone import LoraSettings
from r2ec.modeling.generation import GenerationSettings
from r2ec.modeling.prompts import PromptSettings
from r2ec.modeling.recommender import R2ecConfig, R2ecRecommender
from r2ec.training.config import TrainConfig
from r2ec.training.logging import FanOutLogger, JsonlLogger, MetricsLogger
from r2ec.training.trainer import R2ecTrainer
from services.datastore import load_prepared
from services.jobs.evaluate import peak_rss_mb
from services.settings import Settings

DOMAIN_OF_DATASET = {"ml-100k": "movies"}


def model_config(
    dataset: str,
    reasoning: bool,
    backbone: str = "smollm2-135m-instruct",
    history_items: int = 10,
    top_layers: int | None = 4,
    max_new_tokens: int = 32,
) -> R2ecConfig:
    """The CPU-friendly defaults: compact prompts (10 items, no elapsed times), LoRA on the top 4 layers."""
    return R2ecConfig(
        backbone=backbone,
        reasoning=reasoning,
        lora=LoraSettings(top_layers=top_layers),
        prompts=PromptSettings(
            domain=DOMAIN_OF_DATASET.get(dataset, "items"), history_items=history_items, show_time=False
        ),
        generation=GenerationSettings(max_new_tokens=max_new_tokens),
    )


def run(
    settings: Settings,
    train_config: TrainConfig,
    out_dir: Path,
    dataset: str | None = None,
    backbone: str = "smollm2-135m-instruct",
    history_items: int = 10,
    top_layers: int | None = 4,
    init_checkpoint: Path | None = None,
    extra_logger: MetricsLogger | None = None,
) -> dict[str, Any]:
    """Train; return the budget, the best validation NDCG@10 and where the checkpoint is."""
    started = time.perf_counter()
    torch.manual_seed(train_config.seed)
    data = load_prepared(settings, dataset)
    reasoning = train_config.mode == "recpo"
    config = model_config(
        data.name, reasoning, backbone, history_items, top_layers, max_new_tokens=train_config.max_new_tokens
    )
    cache = settings.root / "cache"
    if init_checkpoint is not None:
        recommender = R2ecRecommender.load(init_checkpoint, cache)
        recommender.config = config
    else:
        recommender = R2ecRecommender.create(config, cache)
    jsonl = JsonlLogger(out_dir / "metrics.jsonl")
    logger = FanOutLogger(jsonl, extra_logger) if extra_logger else jsonl
    trainer = R2ecTrainer(recommender, data, train_config, logger=logger, progress=settings.show_progress)
    result = trainer.train(out_dir)
    summary = {
        "mode": train_config.mode,
        "dataset": data.name,
        "checkpoint": str(result.best_dir),
        "best_valid_ndcg@10": result.best_valid_ndcg10,
        "budget": result.budget,
        "train_config": asdict(train_config),
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
