"""Early stopping on validation NDCG@10 for the baselines trained in epochs (SASRec, the content model)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from r2ec.data.samples import Samples
from r2ec.evaluation.evaluator import evaluate
from r2ec.recommender import Recommender


class EarlyStopping:
    """Scores ``model`` on ``valid`` after each epoch, keeps the weights of the best epoch so far, and says when
    ``patience`` epochs brought none better. A tie does not count as better: the earlier epoch is kept."""

    def __init__(self, model: Recommender, network: nn.Module, valid: Samples, patience: int) -> None:
        self.model, self.network, self.valid, self.patience = model, network, valid, patience
        self.epochs, self.best_epoch = 0, 0
        self.last_score = self.best_score = -1.0
        self._best_state: dict[str, Any] = copy.deepcopy(network.state_dict())

    def should_stop(self, epoch: int) -> bool:
        """Validate after ``epoch``; True once ``patience`` epochs have passed since the best one."""
        self.network.eval()
        self.epochs, self.last_score = epoch, evaluate(self.model, self.valid).overall["ndcg@10"]
        if self.last_score > self.best_score:
            self.best_score, self.best_epoch = self.last_score, epoch
            self._best_state = copy.deepcopy(self.network.state_dict())
        return epoch - self.best_epoch >= self.patience

    def finish(self) -> dict[str, Any]:
        """Load the best epoch's weights back (eval mode); the epochs run, the best one and its score."""
        self.network.load_state_dict(self._best_state)
        self.network.eval()
        return {"epochs": self.epochs, "best_epoch": self.best_epoch, "best_valid_ndcg@10": round(self.best_score, 6)}
