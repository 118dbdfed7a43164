"""RecPO losses (method.md §3, step 3), written so each rollout is pushed by its *own* advantage.

The reference code broadcasts advantages so that a whole group's token gradient cancels; here the per-token
loss keeps the (N, T) shape of the completion mask and multiplies row i by ``A_i`` only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(M,) log-probability of each token under (M, V) logits, computed in float32."""
    return torch.log_softmax(logits.float(), dim=-1).gather(1, tokens[:, None]).squeeze(1)


def policy_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip surrogate per token, token-mean normalised.

    Args:
        logprobs: (N, T) log-probs of the taken tokens under the current policy (0 off the completion).
        old_logprobs: (N, T) the same under the sampling policy (detached; equal on the single update).
        advantages: (N,) one advantage per rollout.
        completion_mask: (N, T) 1 on the rollout's generated tokens.
    Returns:
        (scalar loss, (N, T) per-token loss, zero off the completion).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None].to(ratio.dtype)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv)
    mask = completion_mask.to(ratio.dtype)
    per_token = -surrogate * mask
    return per_token.sum() / mask.sum().clamp_min(1), per_token


def item_softmax_loss(
    users: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    tau: float,
    candidate_mask: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """``-w_i log softmax_c(cos(u_i, v_c) / tau - log_q_c)[label_i]``, averaged over rows.

    Args:
        users: (N, d) unit user vectors (with grad).
        candidates: (C, d) unit item vectors: the batch's targets (with grad) and sampled negatives.
        labels: (N,) index of each row's target among the candidates.
        weights: (N,) advantage of each row (1 for plain contrastive learning).
        candidate_mask: (N, C) True where a candidate must not compete (the user's own history).
        log_q: (C,) log of each candidate's expected count among the candidates; subtracting it makes the
            sampled softmax approximate the softmax over the whole catalogue instead of a popularity-tilted one.
    """
    logits = users.float() @ candidates.float().T / tau
    if log_q is not None:
        logits = logits - log_q.float()
    if candidate_mask is not None:
        logits = logits.masked_fill(candidate_mask, -torch.inf)
    return (weights.float() * F.cross_entropy(logits, labels, reduction="none")).mean()


def sampling_log_q(
    target_probs: np.ndarray, negative_probs: np.ndarray, batch_size: int, n_negatives: int
) -> torch.Tensor:
    """(n_items,) log of each item's expected count among one step's candidates (the ``log_q`` above).

    A step's candidates are ``batch_size`` targets drawn from the training distribution ``target_probs`` and
    ``n_negatives`` negatives drawn from ``negative_probs``.
    """
    expected = batch_size * np.asarray(target_probs) + n_negatives * np.asarray(negative_probs)
    return torch.from_numpy(np.log(expected)).float()
