"""What centring (subtracting mean vectors) does to R²ec scores, zero-shot and after training.

Run: ``.venv/bin/python -m studies.centring [--n-test 2000] [--runs var/bench/quality]``
(after ``benchmarks.quality train``; writes studies/results/centring.{json,md}).

Users ("w/o reasoning" prompts) and items are encoded once per model; the same raw vectors are then scored
three ways: uncentred, both sides centred by the mean item vector, and each side by its own mean (users by the
mean of a seeded sample of training users), on the quality benchmark's seeded
test subset and the cold-start slice. Also reported: how parallel the vectors are (mean cosine between items,
and between users and items), the spread of a user's scores over the catalogue at the model's tau, and how
alike the users' lists are (share of users whose top 10 holds the catalogue's most recommended item).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.quality import device_name, load_data
from r2ec.evaluation.evaluator import evaluation_subset
from r2ec.evaluation.metrics import ranking_metrics, target_ranks
from r2ec.modeling.backbone import EMBEDDED_BACKBONE
from r2ec.modeling.recommender import R2ecRecommender
from r2ec.modeling.scoring import cosine_scores, project
from r2ec.training.recipes import CPU_MODEL
from services.settings import load_settings
from studies import RESULTS

USER_MEAN_SAMPLES = 256  # seeded training users whose mean vector centres users in the "own means" variant


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine over all pairs of a row of ``a`` and a row of ``b``."""
    return float((project(a, None) @ project(b, None).T).mean())


def top10_concentration(scores: torch.Tensor) -> float:
    """Share of users whose top 10 holds the item that appears in the most users' top 10."""
    top = scores.topk(10, dim=1).indices
    return float(torch.bincount(top.flatten()).max()) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--backbone", default=EMBEDDED_BACKBONE, help="of the zero-shot model; 'tiny' smoke-tests")
    args = parser.parse_args()
    settings = load_settings(progress=False)
    runs = args.runs or settings.root / "bench" / "quality"
    data = load_data(settings)
    subset, overall = evaluation_subset(data.test, args.n_test, settings.seed)
    rows_for_mean = np.random.default_rng(settings.seed).choice(len(data.train), USER_MEAN_SAMPLES, replace=False)
    mean_users = data.train.take(np.sort(rows_for_mean))
    cache = settings.root / "cache"
    models = {
        "r2ec-zero-shot": lambda: R2ecRecommender.create(
            replace(CPU_MODEL, backbone=args.backbone), cache
        ),
        "r2ec-contrastive": lambda: R2ecRecommender.load(runs / "contrastive" / "best", cache, settings.dtype),
    }
    rows = []
    for name, build in models.items():
        started = time.perf_counter()
        recommender = build()
        items = recommender.raw_vectors(recommender.item_prompt_ids(data.items), batch_size=64)
        users = recommender.raw_vectors(recommender.user_prompt_ids(subset, data.items), batch_size=64)
        item_mean = items.mean(dim=0)
        user_mean = recommender.raw_vectors(recommender.user_prompt_ids(mean_users, data.items)).mean(dim=0)
        none = torch.zeros_like(item_mean)
        target, history = torch.from_numpy(subset.target), torch.from_numpy(subset.history)
        centrings = {"none": (none, none), "item mean": (item_mean, item_mean), "own means": (user_mean, item_mean)}
        for centring, (user_shift, item_shift) in centrings.items():
            centred_users, centred_items = users - user_shift, items - item_shift
            scores = cosine_scores(project(centred_users, None), project(centred_items, None), recommender.config.tau)
            ranks = target_ranks(scores, target, history).numpy()
            rows.append(
                {
                    "model": name,
                    "centring": centring,
                    "test": {**ranking_metrics(ranks[overall]), "n": int(overall.sum())},
                    "test_cold": {**ranking_metrics(ranks[subset.cold]), "n": int(subset.cold.sum())},
                    "item_item_cosine": mean_cosine(centred_items, centred_items),
                    "user_item_cosine": mean_cosine(centred_users, centred_items),
                    "score_spread": float(scores.std(dim=1).mean()),
                    "top10_concentration": top10_concentration(scores),
                    "wall_s": round(time.perf_counter() - started, 1),
                    "device": device_name(),
                }
            )
            r = rows[-1]
            print(
                f"{name} centring={centring}: NDCG@10 {r['test']['ndcg@10']:.4f} cold {r['test_cold']['ndcg@10']:.4f}"
            )
    runs_flag = f" --runs {args.runs}" if args.runs else ""
    command = f".venv/bin/python -m studies.centring --n-test {args.n_test}{runs_flag}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "centring.json").write_text(json.dumps({"command": command, "results": rows}, indent=2) + "\n")
    lines = [
        "# Centring the vectors (ML-100k test subset)\n",
        f"Command: `{command}`; {args.n_test} seeded test samples + the cold-start slice; same raw vectors scored "
        "three ways. `contrastive` is the quality benchmark's checkpoint.\n",
        "| model | centring | NDCG@10 | HR@10 | cold NDCG@10 | mean item-item cos | mean user-item cos | score spread "
        "| users sharing the top item |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['centring']} | {r['test']['ndcg@10']:.4f} | {r['test']['hr@10']:.4f} | "
            f"{r['test_cold']['ndcg@10']:.4f} | {r['item_item_cosine']:.3f} | {r['user_item_cosine']:.3f} | "
            f"{r['score_spread']:.2f} | {r['top10_concentration']:.2f} |"
        )
    (RESULTS / "centring.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
