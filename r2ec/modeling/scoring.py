"""The recommendation head: centred cosine similarity over temperature, in float32 (method.md §1, §7).

Raw LM hidden states are nearly parallel (cosine 0.92-0.97 between any two), so the common direction is
removed first: every vector has the mean item vector subtracted before normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_TAU = 0.02


def project(vectors: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """(N, d) unit vectors after removing ``mean`` (None = no centring), in float32."""
    vectors = vectors.float()
    if mean is not None:
        vectors = vectors - mean.float()
    return F.normalize(vectors, dim=-1)


def cosine_scores(users: torch.Tensor, items: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """(B, n) scores ``cos(u, v) / tau`` from already projected (unit) vectors."""
    return users.float() @ items.float().T / tau
