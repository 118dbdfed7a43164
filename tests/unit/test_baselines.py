"""Popularity and SASRec behind the Recommender contract, on the small synthetic dataset."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from r2ec.baselines.popularity import Popularity, PopularityPrior
from r2ec.baselines.sasrec import SASRec, SASRecConfig, _rows
from r2ec.data.samples import PAD, PreparedData, Samples
from r2ec.evaluation.evaluator import evaluate
from r2ec.recommender import Recommender

# a few seconds: more, smaller steps than the ML-100k defaults, on ~5.5k training samples
FAST = {"stride": 4, "batch_size": 64, "dropout": 0.2, "max_epochs": 3, "patience": 2}


@pytest.fixture(scope="module")
def sasrec(synthetic_data: PreparedData) -> tuple[SASRec, dict]:
    model = SASRec(SASRecConfig(seed=1, **FAST))
    return model, model.fit(synthetic_data)


def test_popularity_scores_are_train_target_counts(synthetic_data: PreparedData) -> None:
    model = Popularity()
    model.fit(synthetic_data)
    scores = model.full_sort_predict(synthetic_data.test.take(slice(0, 3)))
    counts = np.zeros(synthetic_data.n_items)
    for target in synthetic_data.train.target:
        counts[target] += 1
    assert scores.shape == (3, synthetic_data.n_items)
    assert (scores.numpy() == counts[None]).all()


class SignalFree(Recommender):
    """Scores that are a fixed pseudo-random function of (user, item): no preference, no popularity."""

    def __init__(self, n_items: int) -> None:
        self.item_phase = torch.rand(n_items, generator=torch.Generator().manual_seed(3))

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        users = torch.tensor([zlib.crc32(str(u).encode()) % 1000 for u in batch.user_id], dtype=torch.float32)
        return torch.frac(torch.sin(users[:, None] * 12.9898 + self.item_phase[None] * 78.233) * 437.58)


class NoisyOracle(Recommender):
    """The target scores in [1, 2), every other item in [0, 1): always first unless the history hides it."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        scores = torch.rand(len(batch), self.n_items, generator=torch.Generator().manual_seed(0))
        scores[torch.arange(len(batch)), torch.from_numpy(batch.target)] += 1.0
        return scores


def test_popularity_prior_lifts_a_model_without_signal(synthetic_data: PreparedData) -> None:
    base = SignalFree(synthetic_data.n_items)
    prior = PopularityPrior(SignalFree(synthetic_data.n_items))
    budget = prior.fit(synthetic_data)
    popularity = Popularity()
    popularity.fit(synthetic_data)

    assert prior.weight is not None and prior.weight > 0, budget["prior_valid_ndcg@10"]
    ndcg = {
        name: evaluate(m, synthetic_data.test).overall["ndcg@10"]
        for name, m in (("base", base), ("prior", prior), ("popularity", popularity))
    }
    assert ndcg["prior"] > 1.3 * ndcg["base"] and ndcg["prior"] >= 0.8 * ndcg["popularity"], ndcg

    batch = synthetic_data.test.take(slice(0, 8))
    bonus = prior.full_sort_predict(batch) - base.full_sort_predict(batch)
    counts = torch.from_numpy(synthetic_data.train_target_counts())
    assert torch.allclose(bonus, bonus[:1].expand_as(bonus)), "the bonus is the same for every user"
    by_count = torch.argsort(counts)
    assert (bonus[0, by_count].diff() >= 0).all() and bonus[0, counts.argmax()] > bonus[0, counts.argmin()]


def test_popularity_prior_stays_off_when_validation_says_so(synthetic_data: PreparedData) -> None:
    prior = PopularityPrior(NoisyOracle(synthetic_data.n_items))
    budget = prior.fit(synthetic_data)
    assert prior.weight == 0.0, budget["prior_valid_ndcg@10"]
    assert budget["prior_valid_ndcg@10"][0.0] > budget["prior_valid_ndcg@10"][max(prior.weights)]


def test_popularity_prior_refuses_to_score_before_fit() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        PopularityPrior(NoisyOracle(3)).full_sort_predict(Samples(*(np.zeros(1) for _ in range(7))))


def test_sasrec_beats_popularity_on_planted_preferences(
    synthetic_data: PreparedData, sasrec: tuple[SASRec, dict]
) -> None:
    model, _ = sasrec
    popularity = Popularity()
    popularity.fit(synthetic_data)
    sas = evaluate(model, synthetic_data.test).overall["ndcg@10"]
    pop = evaluate(popularity, synthetic_data.test).overall["ndcg@10"]
    assert sas > 1.2 * pop, (sas, pop)


def test_sasrec_budget_and_best_weights(synthetic_data: PreparedData, sasrec: tuple[SASRec, dict]) -> None:
    model, budget = sasrec
    assert 1 <= budget["best_epoch"] <= budget["epochs"] <= FAST["max_epochs"]
    assert budget["samples_seen"] > 0
    # the restored weights are the best epoch's: re-evaluating gives the recorded validation score
    valid = evaluate(model, synthetic_data.valid).overall["ndcg@10"]
    assert valid == pytest.approx(budget["best_valid_ndcg@10"], abs=1e-6)


def test_sasrec_is_deterministic_by_seed(synthetic_data: PreparedData) -> None:
    config = SASRecConfig(seed=1, max_epochs=1, patience=1)
    first, second, other = SASRec(config), SASRec(config), SASRec(SASRecConfig(seed=2, max_epochs=1, patience=1))
    batch = synthetic_data.test.take(slice(0, 16))
    scores = []
    for m in (first, second, other):
        m.fit(synthetic_data)
        scores.append(m.full_sort_predict(batch))
    assert torch.equal(scores[0], scores[1])
    assert not torch.equal(scores[0], scores[2])


def test_sasrec_never_reads_past_the_last_history_item(
    sasrec: tuple[SASRec, dict], synthetic_data: PreparedData
) -> None:
    model, _ = sasrec
    short = synthetic_data.train.take(np.flatnonzero(synthetic_data.train.history_len < 10)[:8])
    scores = model.full_sort_predict(short)
    assert scores.shape == (len(short), synthetic_data.n_items) and torch.isfinite(scores).all()
    # causal attention: the state at the last real position ignores whatever fills the pad tail
    rows = torch.from_numpy(short.history + 1)  # embedding rows, 0 = pad
    filled = torch.where(rows == 0, torch.arange(1, rows.shape[1] + 1)[None], rows)
    last = torch.from_numpy(short.history_len - 1)
    at_last = torch.arange(len(short))
    assert model.network is not None
    with torch.no_grad():
        expected = model.network.encode(rows)[at_last, last]
        assert torch.allclose(model.network.encode(filled)[at_last, last], expected, atol=1e-5)


def test_sasrec_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(hidden_size=64, n_heads=3)
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(dropout=1.0)


def test_sasrec_reads_the_newest_items_of_a_history() -> None:
    history = np.array([[3, 4, 5, 6, PAD, PAD], [7, PAD, PAD, PAD, PAD, PAD]])
    # embedding row = catalogue index + 1, 0 = pad; the newest 3 items, oldest first
    assert _rows(history, 3).tolist() == [[5, 6, 7], [8, 0, 0]]
    assert _rows(history, 8).tolist() == [[4, 5, 6, 7, 0, 0, 0, 0], [8, 0, 0, 0, 0, 0, 0, 0]]
