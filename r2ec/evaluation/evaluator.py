"""Scores a split in batches with any :class:`~r2ec.recommender.Recommender` and reports its metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from r2ec.data.samples import Samples
from r2ec.evaluation.metrics import DEFAULT_KS, ranking_metrics, target_ranks
from r2ec.recommender import Recommender


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics on a split and on its cold-start slice, plus the per-sample ranks behind them."""

    overall: dict[str, float]
    cold: dict[str, float]
    ranks: np.ndarray
    n_samples: int
    n_cold: int

    def as_dict(self, split: str) -> dict[str, dict[str, float]]:
        """The ``{"test": {...}, "test_cold": {...}}`` shape of ``r2ec evaluate --json``."""
        return {
            split: {**self.overall, "n": self.n_samples},
            f"{split}_cold": {**self.cold, "n": self.n_cold},
        }


def evaluation_subset(samples: Samples, n: int, seed: int = 0) -> tuple[Samples, np.ndarray]:
    """A fixed, seeded random subset of ``n`` samples, plus every cold-start sample.

    Returns the union (in split order) and a mask of the random part: overall metrics are computed on the
    random part only (so the cold slice is not over-weighted), cold metrics on every cold sample.
    """
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(samples), min(n, len(samples)), replace=False)
    union = np.union1d(chosen, np.flatnonzero(samples.cold))
    return samples.take(union), np.isin(union, chosen)


@torch.no_grad()
def sample_ranks(model: Recommender, samples: Samples, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Target rank of every sample (0 = miss), scored ``batch_size`` samples at a time."""
    ranks = []
    for start in tqdm(range(0, len(samples), batch_size), disable=not progress, desc=f"scoring {model.name}"):
        batch = samples.take(slice(start, start + batch_size))
        scores = model.full_sort_predict(batch)
        ranks.append(
            target_ranks(scores, torch.from_numpy(batch.target), torch.from_numpy(batch.history)).cpu().numpy()
        )
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def evaluate(
    model: Recommender,
    samples: Samples,
    batch_size: int = 256,
    ks: tuple[int, ...] = DEFAULT_KS,
    progress: bool = False,
    overall: np.ndarray | None = None,
) -> EvaluationReport:
    """Full-ranking metrics of ``model`` on ``samples`` (or on the ``overall`` mask of them) and on the cold slice."""
    ranks = sample_ranks(model, samples, batch_size, progress)
    overall = np.ones(len(samples), dtype=bool) if overall is None else overall
    return EvaluationReport(
        overall=ranking_metrics(ranks[overall], ks),
        cold=ranking_metrics(ranks[samples.cold], ks),
        ranks=ranks,
        n_samples=int(overall.sum()),
        n_cold=int(samples.cold.sum()),
    )
