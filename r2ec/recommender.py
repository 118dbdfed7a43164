"""The one contract every recommender implements, so the evaluator and jobs treat them alike.

Modelled on RecBole's ``calculate_loss`` / ``full_sort_predict``: ``fit`` trains on the train split (with
early stopping on valid where the model has any), ``full_sort_predict`` scores the whole catalogue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from r2ec.data.samples import PreparedData, Samples


class Recommender(ABC):
    """Scores every catalogue item for a batch of samples (users at a moment, with their history)."""

    name: str = "recommender"

    def fit(self, data: PreparedData, progress: bool = False) -> dict[str, Any]:
        """Train on ``data.train`` (validate on ``data.valid``); return a summary of the budget used."""
        return {}

    @abstractmethod
    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        """(B, n_items) float scores; higher is better. History masking is the evaluator's job."""
