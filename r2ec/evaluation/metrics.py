"""Full-ranking HR@K and NDCG@K with one relevant item per sample (method.md §4).

Rank convention: 1 + number of unmasked items scoring strictly higher than the target + number of other
unmasked items scoring *equal* to it (ties count against the model, so a constant scorer earns nothing).
The user's history window is masked; a target that is in the history is a miss (rank 0 = miss).
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_KS = (5, 10, 20)


def in_top_k(ranks: np.ndarray | torch.Tensor, k: int) -> np.ndarray | torch.Tensor:
    """True where a 1-based target rank lies within the top ``k``; rank 0 (target masked as history) never does."""
    return (ranks >= 1) & (ranks <= k)


def ndcg_gain(ranks: np.ndarray | torch.Tensor, k: int) -> np.ndarray | torch.Tensor:
    """Per-sample NDCG@k with one relevant item: ``1 / log2(rank + 1)`` inside the top ``k``, else 0 (float)."""
    hit = in_top_k(ranks, k)
    if isinstance(ranks, torch.Tensor):
        return torch.where(hit, 1.0 / torch.log2(ranks.float().clamp_min(1) + 1), 0.0)
    return np.where(hit, 1.0 / np.log2(np.maximum(np.asarray(ranks, dtype=np.float64), 1) + 1), 0.0)


def median_rank(ranks: np.ndarray, n_items: int) -> float:
    """Median 1-based target rank with a masked target (rank 0) counted as last: where targets land beyond a top K."""
    return float(np.median(np.where(np.asarray(ranks) == 0, n_items, ranks)))


def mask_history(scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Float32 copy of (B, n) scores with each row's history items (-1 = pad) set to -inf."""
    masked = scores.float().clone()
    padded = history.clamp_min(0)
    masked.scatter_(1, padded, torch.where(history >= 0, -torch.inf, masked.gather(1, padded)))
    return masked


def target_ranks(scores: torch.Tensor, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target among all items, history masked; 0 where the target is masked.

    Args:
        scores: (B, n_items) any float dtype; compared in float32.
        target: (B,) int64 catalogue indices.
        history: (B, h) int64 catalogue indices, -1 for padding.
    Returns:
        (B,) int64 ranks.
    """
    scores = mask_history(scores, history)
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_score = scores[rows, target][:, None]
    higher = (scores > target_score).sum(dim=1)
    tied_others = (scores == target_score).sum(dim=1) - 1
    ranks = 1 + higher + tied_others
    target_in_history = (history == target[:, None]).any(dim=1)
    return torch.where(target_in_history, torch.zeros_like(ranks), ranks)


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@K and NDCG@K over samples from their target ranks (0 = miss)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    if len(ranks) == 0:
        return {f"{m}@{k}": 0.0 for k in ks for m in ("ndcg", "hr")}
    for k in ks:
        out[f"ndcg@{k}"] = float(ndcg_gain(ranks, k).mean())
        out[f"hr@{k}"] = float(in_top_k(ranks, k).mean())
    return out
