"""Item popularity: the most-popular baseline, and the same counts as a prior on another model's scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from r2ec.data.samples import PreparedData, Samples
from r2ec.evaluation.metrics import ranking_metrics, target_ranks
from r2ec.recommender import Recommender

PRIOR_WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class Popularity(Recommender):
    """Ranks items by their count among training targets, the same list for every user."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None

    def fit(self, data: PreparedData, progress: bool = False) -> dict[str, Any]:
        self.counts = torch.from_numpy(data.train_target_counts().astype(np.float32))
        return {"samples": len(data.train)}

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        if self.counts is None:
            raise RuntimeError("Popularity.fit must run before scoring")
        return self.counts.expand(len(batch), -1)


class PopularityPrior(Recommender):
    """``base`` scores + weight * log(1 + training count), the weight chosen on validation (method.md §7).

    A production option for a model whose item tower has not (yet) learnt item popularity; it is reported as its
    own row, never folded into the base model's numbers. Items never seen in training get no bonus, so the
    cold-start slice can only lose from it.
    """

    def __init__(
        self, base: Recommender, weights: tuple[float, ...] = PRIOR_WEIGHTS, valid_samples: int = 500, seed: int = 0
    ) -> None:
        self.base = base
        self.name = f"{base.name}+popularity-prior"
        self.weights = weights
        self.valid_samples = valid_samples
        self.seed = seed
        self.log_counts: torch.Tensor | None = None
        self.weight: float | None = None

    def fit(self, data: PreparedData, progress: bool = False) -> dict[str, Any]:
        """Fits the base model, then picks the weight with the best NDCG@10 on a seeded subset of ``data.valid``."""
        budget = self.base.fit(data, progress=progress)
        self.log_counts = torch.log1p(torch.from_numpy(data.train_target_counts().astype(np.float32)))
        valid = data.valid
        chosen = np.random.default_rng(self.seed).choice(len(valid), min(self.valid_samples, len(valid)), replace=False)
        valid = valid.take(np.sort(chosen))
        starts = tqdm(range(0, len(valid), 64), disable=not progress, desc="scoring valid for the prior weight")
        base_scores = torch.cat([self.base.full_sort_predict(valid.take(slice(i, i + 64))).float() for i in starts])
        target, history = torch.from_numpy(valid.target), torch.from_numpy(valid.history)
        valid_ndcg = {
            w: ranking_metrics(target_ranks(base_scores + w * self.log_counts, target, history).numpy())["ndcg@10"]
            for w in self.weights
        }
        self.weight = max(self.weights, key=lambda w: (valid_ndcg[w], -w))
        return {**budget, "prior_weight": self.weight, "prior_valid_ndcg@10": valid_ndcg, "prior_valid_n": len(valid)}

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        if self.log_counts is None or self.weight is None:
            raise RuntimeError("PopularityPrior.fit must run before scoring")
        return self.base.full_sort_predict(batch).float() + self.weight * self.log_counts
