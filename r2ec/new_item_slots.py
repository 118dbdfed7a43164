"""A serving policy that guarantees new items a place in every top-K list.

A model trained on past choices learns that items nobody chose yet are unlikely, so items released after its
training window sit low for everyone (``benchmarks/results/cold_start.md``: R²ec's trained checkpoints put the
cold-start targets at a median rank of 438-638 of 1,682, yet first among the 66 new items 6 times in 148, against
~2 by chance). Production recommenders handle this with a fixed exploration budget: a few places in each list go to
the best new items. Which new items fill them is the model's call, so a text-based item tower that ranks new items
sensibly fills them well, and an ID model (which cannot score an item it never saw) could not.
"""

from __future__ import annotations

from typing import Any

import torch

from r2ec.data.samples import PreparedData, Samples
from r2ec.evaluation.metrics import mask_history
from r2ec.recommender import Recommender


def _check_slots(slots: int, k: int) -> None:
    if not 0 < slots <= k:
        raise ValueError(f"need 0 < slots <= k, got slots={slots}, k={k}")


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
    """``base`` with at least ``slots`` of its top ``k`` given to new items (never a training target).

    Reported as its own row (``<model>+new-item-slots``), never folded into the base model's numbers: it trades a
    little of the warm ranking for exposure of new items.
    """

    def __init__(self, base: Recommender, slots: int = 1, k: int = 10) -> None:
        _check_slots(slots, k)  # before fit: a bad count fails at once, not after the model is loaded
        self.base = base
        self.name = f"{base.name}+new-item-slots"
        self.slots = slots
        self.k = k
        self.new_items: torch.Tensor | None = None

    def fit(self, data: PreparedData, progress: bool = False) -> dict[str, Any]:
        budget = self.base.fit(data, progress=progress)
        self.new_items = torch.from_numpy(data.train_target_counts() == 0)
        return {**budget, "new_item_slots": self.slots, "slots_k": self.k, "new_items": int(self.new_items.sum())}

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        if self.new_items is None:
            raise RuntimeError("NewItemSlots.fit must run before scoring")
        scores = mask_history(self.base.full_sort_predict(batch), torch.from_numpy(batch.history))
        return reserve_new_item_slots(scores, self.new_items.to(scores.device), self.slots, self.k)
