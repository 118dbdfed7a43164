"""A serving policy that guarantees new items a place in every top-K list.

A model trained on past choices learns that items nobody chose yet are unlikely, so items released after its
training window sit low for everyone (``studies/results/cold_start.md``: R²ec's trained checkpoints put the
cold-start targets at a median rank of 438-638 of 1,682, yet first among the 66 new items 6 times in 148, against
~2 by chance). Production recommenders handle this with a fixed exploration budget: a few places in each list go to
the best new items. Which new items fill them is the model's call, so a text-based item tower that ranks new items
sensibly fills them well, and an ID model (which cannot score an item it never saw) could not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from r2ec.data.samples import PreparedData, Samples
from r2ec.evaluation.metrics import mask_history
from r2ec.recommender import Recommender


def _check_slots(slots: int, k: int) -> None:
    if not 0 < slots <= k:
        raise ValueError(f"need 0 < slots <= k, got slots={slots}, k={k}")


def _check_max_age(max_age_years: int | None) -> None:
    if max_age_years is not None and max_age_years < 0:
        raise ValueError(f"max_age_years must be >= 0, got {max_age_years}")


def last_training_year(data: PreparedData) -> int:
    """Calendar year (UTC) of the training window's last target: the reference for a release's age."""
    return pd.Timestamp(int(data.train.target_time.max()), unit="s").year


def release_years(data: PreparedData) -> np.ndarray:
    """(n_items,) float release years, NaN where unknown; a catalogue without a ``year`` column is refused."""
    if "year" not in data.items:
        raise ValueError(f"{data.name}: the catalogue has no 'year' column, so new releases cannot be told apart")
    return pd.to_numeric(data.items["year"], errors="coerce").to_numpy(dtype=np.float64)


def new_items(data: PreparedData, max_age_years: int | None = None) -> np.ndarray:
    """(n_items,) bool: the items nobody chose in training, which a slot may show.

    With ``max_age_years``, only those released at most that many calendar years before the year of the training
    window's last target: new *releases*. Why: on ML-100k 31 of the 66 never-chosen items are back-catalogue
    films (1930s to 1996) that nobody picks, while 114 of the 148 cold-start test targets are 1998 releases
    (``studies/results/cold_ceiling.md``); a slot spent on an old film nobody wanted is exploration wasted.
    An item with an unknown year is not counted as a new release.
    """
    never_chosen = data.train_target_counts() == 0
    if max_age_years is None:
        return never_chosen
    _check_max_age(max_age_years)
    return never_chosen & (release_years(data) >= last_training_year(data) - max_age_years)  # NaN >= x is False


def reserve_new_item_slots(scores: torch.Tensor, new_items: torch.Tensor, slots: int, k: int) -> torch.Tensor:
    """Scores whose top ``k`` holds at least ``slots`` new items wherever enough unmasked new items exist.

    Where the model's own top ``k`` holds fewer, its lowest-placed old items give way to the best-scored new items
    not already in it; these take the last places of the top ``k`` in their own order. Every other item keeps its
    relative order below. ``scores`` is (B, n) with masked items at -inf; ``new_items`` is an (n,) bool mask.
    """
    _check_slots(slots, k)
    scores = scores.float()
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    finite = torch.isfinite(scores)
    if not finite.any():
        return scores.clone()
    spread = scores[finite].max() - scores[finite].min() + 1.0
    ranked = torch.where(finite, scores - spread, scores)  # everything below the lists built here
    ceiling = scores[finite].max()
    for row in range(scores.shape[0]):
        listed = [int(i) for i in top[row] if finite[row, i]]
        n_new = sum(bool(new_items[i]) for i in listed)
        if n_new < slots:
            candidates = scores[row].masked_fill(~(new_items & finite[row]), -torch.inf)
            candidates[listed] = -torch.inf
            best = candidates.topk(min(slots - n_new, scores.shape[1]))
            extra = [int(i) for i, s in zip(best.indices, best.values, strict=True) if torch.isfinite(s)]
            room_for_old = k - len(extra) - n_new
            old = [i for i in listed if not new_items[i]][:room_for_old]
            listed = [i for i in listed if new_items[i] or i in old] + extra
        for place, item in enumerate(listed):
            ranked[row, item] = ceiling + (len(listed) - place)
    return ranked


class NewItemSlots(Recommender):
    """``base`` with at least ``slots`` of its top ``k`` given to new items (never a training target; with
    ``max_age_years``, new releases only: see ``new_items``).

    Reported as its own row (``<model>+new-item-slots``), never folded into the base model's numbers: it trades a
    little of the warm ranking for exposure of new items.
    """

    def __init__(self, base: Recommender, slots: int = 1, k: int = 10, max_age_years: int | None = None) -> None:
        _check_slots(slots, k)  # before fit: bad arguments fail at once, not after the model is loaded
        _check_max_age(max_age_years)
        self.base = base
        self.name = f"{base.name}+new-item-slots"
        self.slots = slots
        self.k = k
        self.max_age_years = max_age_years
        self.new_items: torch.Tensor | None = None

    def fit(self, data: PreparedData, progress: bool = False) -> dict[str, Any]:
        pool = new_items(data, self.max_age_years)  # before the base model's fit: a catalogue without years fails fast
        budget = self.base.fit(data, progress=progress)
        self.new_items = torch.from_numpy(pool)
        return {
            **budget,
            "new_item_slots": self.slots,
            "slots_k": self.k,
            "new_items": int(pool.sum()),
            "new_item_max_age_years": self.max_age_years,
        }

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        if self.new_items is None:
            raise RuntimeError("NewItemSlots.fit must run before scoring")
        scores = mask_history(self.base.full_sort_predict(batch), torch.from_numpy(batch.history))
        return reserve_new_item_slots(scores, self.new_items.to(scores.device), self.slots, self.k)
