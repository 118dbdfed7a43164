"""The exact chance of a random new-item pick (studies/slot_policies.py) against an enumeration of that pick."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest
import torch

from r2ec.new_item_slots import reserve_new_item_slots
from studies.slot_policies import K, random_pick_chance


def enumerated_chance(scores: torch.Tensor, target: int, pool: np.ndarray, slots: int) -> float:
    """Share of the equally likely orders of the pool items outside the model's own top K (each order written into
    the scores below every other item) under which the policy puts ``target`` in the top K: the exact chance,
    computed through ``reserve_new_item_slots`` itself rather than by formula."""
    finite = torch.isfinite(scores)
    floor = scores[finite].min() - 10.0
    listed = set(scores.topk(K).indices.tolist())
    candidates = [i for i in np.flatnonzero(pool) if finite[i] and i not in listed]
    orders = list(permutations(candidates, min(slots, len(candidates))))
    hits = 0
    for order in orders:
        drawn = scores.clone()
        drawn[candidates] = floor
        for place, item in enumerate(order):
            drawn[item] = floor + slots - place
        final = reserve_new_item_slots(drawn[None], torch.from_numpy(pool), slots, K)[0]
        hits += int(target in final.topk(K).indices.tolist())
    return hits / len(orders) if orders else float(target in final_top(scores, pool, slots))


def final_top(scores: torch.Tensor, pool: np.ndarray, slots: int) -> list[int]:
    return reserve_new_item_slots(scores[None], torch.from_numpy(pool), slots, K)[0].topk(K).indices.tolist()


@pytest.mark.parametrize("slots", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_chance_matches_a_simulated_random_pick(seed: int, slots: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(30, generator=generator)
    scores[torch.rand(30, generator=generator) < 0.15] = -torch.inf  # history
    pool = (torch.rand(30, generator=generator) < 0.3).numpy()
    scores[pool] -= 3.0  # new items sink, as under a trained model, so the slots are left to the pick
    chances = []
    for target in [i for i in range(30) if torch.isfinite(scores[i])]:
        chances.append(random_pick_chance(scores, target, pool, slots))
        assert chances[-1] == pytest.approx(enumerated_chance(scores, target, pool, slots))
    assert any(0 < chance < 1 for chance in chances), "the case must hold targets left to luck"


def test_no_chance_when_the_model_fills_the_slots_itself() -> None:
    scores = torch.arange(30, dtype=torch.float32)
    pool = np.zeros(30, dtype=bool)
    pool[[29, 3]] = True  # item 29 is the model's first choice, item 3 far below
    assert random_pick_chance(scores, 3, pool, slots=1) == 0.0
    assert random_pick_chance(scores, 29, pool, slots=1) == 1.0
    assert random_pick_chance(scores, 3, pool, slots=2) == 1.0  # the one pool item left takes the second slot
