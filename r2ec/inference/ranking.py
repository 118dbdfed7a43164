"""User vectors and ranked lists from ``Samples``: the scoring half of the inference path (method.md §6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from r2ec.data.samples import Samples
from r2ec.evaluation.metrics import mask_history
from r2ec.modeling.generation import Rollouts
from r2ec.modeling.recommender import R2ecRecommender
from r2ec.modeling.scoring import cosine_scores


@dataclass(frozen=True)
class UserReadout:
    """What the model says about a batch of users: unit vectors (B, d) float32 and the reasoning behind each."""

    vectors: np.ndarray
    rationales: list[str]
    stopped: list[bool]
    rollouts: Rollouts


@dataclass(frozen=True)
class RankedLists:
    """Top-k catalogue indices (B, k) int64, best first, and their scores (B, k) float32 (cos / tau)."""

    items: np.ndarray
    scores: np.ndarray


def read_users(recommender: R2ecRecommender, samples: Samples) -> UserReadout:
    """Reasoning (when the model reasons) and the user vector read after it, for every sample."""
    rollouts = recommender.user_rollouts(samples, recommender.catalogue)
    vectors = recommender.project(rollouts.vectors).numpy()
    return UserReadout(vectors, rollouts.rationales, rollouts.stopped, rollouts)


def top_k_unseen(
    users: np.ndarray | torch.Tensor, item_table: torch.Tensor, history: np.ndarray, k: int, tau: float
) -> RankedLists:
    """The ``k`` best items per user over the whole item table, the user's history items excluded."""
    scores = mask_history(cosine_scores(torch.as_tensor(users), item_table, tau), torch.from_numpy(history))
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return RankedLists(top.indices.numpy(), top.values.numpy().astype(np.float32))


def rank_catalogue(recommender: R2ecRecommender, samples: Samples, k: int) -> tuple[UserReadout, RankedLists]:
    """Read every user, then rank the recommender's catalogue for them (history excluded)."""
    readout = read_users(recommender, samples)
    ranked = top_k_unseen(readout.vectors, recommender.item_table, samples.history, k, recommender.config.tau)
    return readout, ranked
