"""RecPO rewards as plain functions of scores and targets (method.md §3, step 2).

Example (one user, three items, target 0, tau already applied)::

    scores = torch.tensor([[2.0, 1.0, 0.0]]); target = torch.tensor([0]); ranks = torch.tensor([1])
    rank_reward(ranks)                   # tensor([1.0])      1 / log2(1 + 1)
    similarity_reward(scores, target)    # tensor([0.665])    softmax(scores)[0]
"""

from __future__ import annotations

import torch

from r2ec.evaluation.metrics import ndcg_gain

RANK_CUTOFF = 1000


def rank_reward(ranks: torch.Tensor, cutoff: int = RANK_CUTOFF) -> torch.Tensor:
    """NDCG@cutoff with one relevant item: ``1 / log2(rank + 1)`` if ``1 <= rank <= cutoff`` else 0."""
    return ndcg_gain(ranks, cutoff)


def similarity_reward(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax over the catalogue of (B, n) ``scores`` (history masked to -inf), taken at the target."""
    probs = torch.softmax(scores.float(), dim=1)
    return probs.gather(1, target[:, None]).squeeze(1)


def fused_reward(rank: torch.Tensor, similarity: torch.Tensor, beta: float = 0.05) -> torch.Tensor:
    """``(1 - beta) * rank + beta * similarity``: the dense similarity term breaks ties of the sparse rank term."""
    return (1 - beta) * rank + beta * similarity


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-8) -> torch.Tensor:
    """``(R - mean) / (std + eps)`` within each user's group of consecutive ``group_size`` rollouts."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.float().view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True, unbiased=False)
    return ((groups - mean) / (std + eps)).view(-1)
