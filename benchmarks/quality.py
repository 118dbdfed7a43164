"""Recommendation quality on ML-100k: popularity, SASRec and the three R²ec modes side by side.

Run: ``.venv/bin/python -m benchmarks.quality [contrastive_minutes] [recpo_minutes] [n_test] [backbone]``
(writes benchmarks/results/quality.{json,md} and the training curves under var/bench/quality/).

Every model is scored on the same fixed, seeded subset of ``n_test`` test samples (overall metrics) plus the
whole cold-start slice (cold metrics): full-catalogue ranking of the LLM modes is too slow on this CPU for the
whole split. All R²ec modes use SmolLM2-135M (fp32 on this CPU) with LoRA on the top 4 layers, so the frozen
lower 26 layers of every item prompt are computed once and shared by the three modes. RecPO starts from the
best contrastive adapter (a warm start: on a CPU budget RecPO from scratch sees too few users).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from r2ec.baselines.popularity import Popularity
from r2ec.baselines.sasrec import SASRec, SASRecConfig
from r2ec.evaluation.evaluator import evaluation_subset, sample_ranks
from r2ec.evaluation.metrics import ranking_metrics
from r2ec.modeling.recommender import R2ecRecommender
from r2ec.modeling.vectors import n_layers
from r2ec.training.config import TrainConfig
from r2ec.training.logging import JsonlLogger
from r2ec.training.trainer import FrozenLayerCache, R2ecTrainer
from services.datastore import load_prepared
from services.jobs import prepare_data
from services.jobs.evaluate import peak_rss_mb
from services.jobs.train import model_config
from services.settings import load_settings

RESULTS = Path(__file__).parent / "results"


def row(model: str, ranks: np.ndarray, overall: np.ndarray, cold: np.ndarray, started: float, budget: dict) -> dict:
    print(f"{model}: test ndcg@10 {ranking_metrics(ranks[overall])['ndcg@10']:.4f}", flush=True)
    return {
        "model": model,
        "dataset": "ml-100k",
        "test": {**ranking_metrics(ranks[overall]), "n": int(overall.sum())},
        "test_cold": {**ranking_metrics(ranks[cold]), "n": int(cold.sum())},
        "budget": budget,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main(contrastive_minutes: float, recpo_minutes: float, n_test: int, backbone: str) -> None:
    settings = load_settings(progress=True)
    prepare_data.run(settings, "ml-100k")
    data = load_prepared(settings, "ml-100k")
    subset, overall = evaluation_subset(data.test, n_test, seed=0)
    cold = subset.cold
    out = settings.root / "bench" / "quality"
    rows: list[dict[str, Any]] = []

    started = time.perf_counter()
    recommender = R2ecRecommender.create(
        model_config("ml-100k", reasoning=False, backbone=backbone), settings.root / "cache"
    )
    contrastive = TrainConfig(
        mode="contrastive",
        max_steps=10_000,
        max_minutes=contrastive_minutes,
        batch_size=16,
        learning_rate=3e-4,
        eval_every=20,
        eval_samples=200,
        patience=4,
    )
    split = max(0, n_layers(recommender.model) - recommender.config.lora.top_layers)
    items = FrozenLayerCache(recommender, recommender.item_prompt_ids(data.items), split)
    trainer = R2ecTrainer(recommender, data, contrastive, JsonlLogger(out / "contrastive.jsonl"), True, items)
    test_users = trainer.user_cache(subset)
    rows.append(
        row(
            "r2ec-zero-shot",
            trainer.sample_ranks(subset, test_users),
            overall,
            cold,
            started,
            {"samples": 0, "steps": 0},
        )
    )

    started = time.perf_counter()
    result = trainer.train(out / "contrastive")
    recommender.load_adapter_weights(result.best_dir)
    budget = {**result.budget, "best_valid_ndcg@10": result.best_valid_ndcg10, "max_minutes": contrastive_minutes}
    rows.append(row("r2ec-contrastive", trainer.sample_ranks(subset, test_users), overall, cold, started, budget))

    started = time.perf_counter()
    recommender.config = replace(recommender.config, reasoning=True)
    recpo = TrainConfig(
        mode="recpo",
        max_steps=10_000,
        max_minutes=recpo_minutes,
        batch_size=4,
        group_size=4,
        learning_rate=1e-4,
        max_new_tokens=32,
        eval_every=10,
        eval_samples=48,
        patience=3,
    )
    trainer = R2ecTrainer(recommender, data, recpo, JsonlLogger(out / "recpo.jsonl"), True, items)
    result = trainer.train(out / "recpo")
    recommender.load_adapter_weights(result.best_dir)
    budget = {
        **result.budget,
        "best_valid_ndcg@10": result.best_valid_ndcg10,
        "max_minutes": recpo_minutes,
        "init": "best contrastive adapter",
    }
    rows.append(row("r2ec-recpo", trainer.sample_ranks(subset), overall, cold, started, budget))

    for baseline in (Popularity(), SASRec(SASRecConfig(seed=0))):
        started = time.perf_counter()
        budget = baseline.fit(data)
        ranks = sample_ranks(baseline, subset)
        rows.insert(
            0 if baseline.name == "popularity" else 1, row(baseline.name, ranks, overall, cold, started, budget)
        )

    meta = {
        "command": f".venv/bin/python -m benchmarks.quality {contrastive_minutes:g} {recpo_minutes:g} {n_test}",
        "subset": f"{int(overall.sum())} seeded random test samples (overall) + all {int(cold.sum())} cold-start "
        "test samples (cold); every model scored on the same rows",
        "model_config": asdict(recommender.config),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2, default=str) + "\n")
    lines = [
        f"# Quality on ML-100k (test subset)\n\nCommand: `{meta['command']}`  \n{meta['subset']}.\n",
        "| model | NDCG@10 | HR@10 | NDCG@20 | cold NDCG@10 | cold HR@10 | samples trained | steps | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, c, b = r["test"], r["test_cold"], r["budget"]
        lines.append(
            f"| {r['model']} | {t['ndcg@10']:.4f} | {t['hr@10']:.4f} | {t['ndcg@20']:.4f} | "
            f"{c['ndcg@10']:.4f} | {c['hr@10']:.4f} | {b.get('samples', '')} | {b.get('steps', b.get('epochs', ''))} "
            f"| {r['wall_s']} |"
        )
    (RESULTS / "quality.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    argv = sys.argv[1:] + ["20", "12", "200", "smollm2-135m-instruct"][len(sys.argv) - 1 :]
    main(float(argv[0]), float(argv[1]), int(argv[2]), argv[3])
