"""Most-popular baseline: score = how often the item is a training target."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from r2ec.data.samples import PreparedData, Samples
from r2ec.recommender import Recommender


class Popularity(Recommender):
    """Ranks items by their count among training targets, the same list for every user."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None

    def fit(self, data: PreparedData, progress: bool = False) -> dict[str, Any]:
        counts = np.bincount(data.train.target, minlength=data.n_items).astype(np.float32)
        self.counts = torch.from_numpy(counts)
        return {"samples": len(data.train)}

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        if self.counts is None:
            raise RuntimeError("Popularity.fit must run before scoring")
        return self.counts.expand(len(batch), -1)
