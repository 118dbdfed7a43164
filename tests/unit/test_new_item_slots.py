"""The new-item slot policy: which items fill the reserved places, and that nothing else moves."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
import torch

from r2ec.data.samples import PreparedData, Samples, prepare
from r2ec.data.synthetic import generate_synthetic
from r2ec.evaluation.evaluator import evaluate
from r2ec.new_item_slots import NewItemSlots, last_training_year, new_items, reserve_new_item_slots
from r2ec.recommender import Recommender

K = 10


def order(scores: torch.Tensor) -> list[int]:
    """Items of one row, best first, masked (-inf) items left out."""
    ranked = scores.argsort(descending=True, stable=True)
    return [int(i) for i in ranked if torch.isfinite(scores[i])]


def random_case(seed: int, slots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(8, 60, generator=generator)
    scores[torch.rand(8, 60, generator=generator) < 0.1] = -torch.inf  # history
    new_items = torch.rand(60, generator=generator) < 0.2
    return scores, new_items, reserve_new_item_slots(scores, new_items, slots, K)


@pytest.mark.parametrize("slots", [1, 3])
@pytest.mark.parametrize("seed", range(5))
def test_slots_go_to_the_best_new_items_and_nothing_else_moves(seed: int, slots: int) -> None:
    scores, new_items, result = random_case(seed, slots)
    for row in range(len(scores)):
        before, after = order(scores[row]), order(result[row])
        assert set(before) == set(after), "masked items stay masked, none is added"
        head = after[:K]
        new_in_head = [i for i in head if new_items[i]]
        new_before = [i for i in before if new_items[i]]
        assert len(new_in_head) >= min(slots, len(new_before))
        assert new_in_head == new_before[: len(new_in_head)], "the new items listed are the best-scored ones"
        old_in_head = [i for i in head if not new_items[i]]
        assert old_in_head == [i for i in before if not new_items[i]][: len(old_in_head)]
        if sum(new_items[i] for i in before[:K]) >= slots:
            assert after == before, "a list that already shows enough new items is left as it was"
        rest = [i for i in before if i not in head]
        assert after[K:] == rest, "below the top K the model's order is kept"


def test_fillers_take_the_last_places_in_their_own_order() -> None:
    scores = torch.tensor([[9.0, 8.0, 7.0, 6.0, 1.0, 0.5, 3.0]])
    new_items = torch.tensor([False, False, False, False, True, True, False])
    result = reserve_new_item_slots(scores, new_items, slots=2, k=4)
    assert order(result[0])[:4] == [0, 1, 4, 5]
    assert order(result[0])[4:] == [2, 3, 6]


def test_slots_must_fit_in_the_list() -> None:
    with pytest.raises(ValueError, match="slots"):
        reserve_new_item_slots(torch.zeros(1, 5), torch.zeros(5, dtype=torch.bool), slots=0, k=3)
    with pytest.raises(ValueError, match="slots"):
        NewItemSlots(NewItemsLast(), slots=11, k=10)


class NewItemsLast(Recommender):
    """Knows each target (it scores 1 + noise) but scores items nobody chose in training below everything else:
    the failure the policy is for. Fit before use."""

    name = "new-items-last"

    def fit(self, data: PreparedData, progress: bool = False) -> dict:
        self.n_items, self.penalty = data.n_items, torch.from_numpy(data.train_target_counts() == 0) * 10.0
        return {}

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        scores = torch.rand(len(batch), self.n_items, generator=torch.Generator().manual_seed(0))
        scores[torch.arange(len(batch)), torch.from_numpy(batch.target)] += 1.0
        return scores - self.penalty


@pytest.fixture(scope="module")
def with_releases() -> PreparedData:
    """The synthetic log in which every tenth item is released late: nobody chooses it before the last 15%."""
    interactions, items = generate_synthetic()
    release = interactions["event_time"].quantile(0.85)
    late = interactions["item_id"].isin(items["item_id"][::10])
    return prepare("synthetic", interactions[~late | (interactions["event_time"] >= release)], items)


def test_the_policy_recovers_cold_targets_a_model_buries(with_releases: PreparedData) -> None:
    data, test = with_releases, with_releases.test
    assert test.cold.sum() >= 10, "the late releases make cold-start test samples"
    base = NewItemsLast()
    base.fit(data)
    slotted = NewItemSlots(NewItemsLast(), slots=1)
    budget = slotted.fit(data)
    raw, policy = evaluate(base, test), evaluate(slotted, test)
    assert raw.cold["hr@10"] == 0
    assert policy.cold["hr@10"] > 0.9, "a cold target is the best new item for its user, so it takes the slot"
    assert slotted.name == "new-items-last+new-item-slots"
    assert budget["new_items"] == int((data.train_target_counts() == 0).sum())
    warm = ~test.cold
    assert np.array_equal(raw.ranks[warm] == 1, policy.ranks[warm] == 1), "a warm target ranked first stays first"


def with_years(data: PreparedData, late_years: list[float]) -> PreparedData:
    """``data`` with release years: 2010 for every item, ``late_years`` cycled over the never-chosen ones."""
    years = np.full(data.n_items, 2010.0)
    never_chosen = np.flatnonzero(data.train_target_counts() == 0)
    years[never_chosen] = np.resize(late_years, len(never_chosen))
    return replace(data, items=data.items.assign(year=years))


def test_a_release_age_limit_keeps_only_recent_never_chosen_items(with_releases: PreparedData) -> None:
    last_year = last_training_year(with_releases)
    data = with_years(with_releases, [last_year, last_year - 1, last_year - 5, np.nan])
    years, never_chosen = data.items["year"].to_numpy(), data.train_target_counts() == 0
    assert np.array_equal(new_items(data), never_chosen)
    assert np.array_equal(new_items(data, max_age_years=0), never_chosen & (years == last_year))
    assert np.array_equal(new_items(data, max_age_years=1), never_chosen & (years >= last_year - 1))
    assert 0 < new_items(data, max_age_years=1).sum() < never_chosen.sum(), "old and unknown years are left out"


def test_slots_with_an_age_limit_skip_old_never_chosen_items(with_releases: PreparedData) -> None:
    last_year = last_training_year(with_releases)
    data = with_years(with_releases, [last_year, 1990])
    slotted = NewItemSlots(NewItemsLast(), slots=1, max_age_years=0)
    budget = slotted.fit(data)
    report = evaluate(slotted, data.test)
    recent = data.items["year"].to_numpy()[data.test.target] == last_year
    cold_recent, cold_old = data.test.cold & recent, data.test.cold & ~recent
    assert cold_recent.sum() >= 5 and cold_old.sum() >= 5, "both kinds of cold target occur"
    assert (report.ranks[cold_recent] <= K).mean() > 0.9, "a recent cold target still takes the slot"
    assert (report.ranks[cold_old] > K).all(), "an old never-chosen item no longer gets one"
    assert budget["new_items"] == int(new_items(data, 0).sum())


def test_the_last_training_year_is_that_of_the_latest_training_target(with_releases: PreparedData) -> None:
    latest = max(with_releases.train.target_time)
    assert last_training_year(with_releases) == datetime.fromtimestamp(int(latest), UTC).year


def test_an_age_limit_needs_release_years(with_releases: PreparedData) -> None:
    with pytest.raises(ValueError, match="no 'year' column"):
        new_items(with_releases, max_age_years=1)
    with pytest.raises(ValueError, match="max_age_years"):
        NewItemSlots(NewItemsLast(), max_age_years=-1)
