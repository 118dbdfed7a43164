"""Training learns the planted preferences of the synthetic log (tiny random model, a few hundred steps).

The model is picked on validation; these tests measure the picked adapter on the *test* split, so the gain
is not the luck of the best validation round. Popularity is the bar a model must clear to show that it
learned who likes what, not only which items are frequent.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from r2ec.baselines.popularity import Popularity
from r2ec.data.samples import PreparedData, prepare
from r2ec.data.synthetic import generate_synthetic
from r2ec.evaluation.evaluator import sample_ranks
from r2ec.evaluation.metrics import ranking_metrics
from r2ec.modeling.recommender import FrozenLayerCache
from r2ec.training.config import TrainConfig
from r2ec.training.trainer import R2ecTrainer

from .model_helpers import LEARNING_MODEL, tiny_recommender


def measured_ndcg(trainer: R2ecTrainer, data: PreparedData, cache: FrozenLayerCache | None) -> float:
    """Test NDCG@10 with the trainer's current adapters (``cache``: frozen-layer states of the test users)."""
    return ranking_metrics(trainer.sample_ranks(data.test, cache))["ndcg@10"]


def train_on(data: PreparedData, config: TrainConfig, cache: Path, out: Path) -> tuple[float, float, dict]:
    """Test NDCG@10 of the tiny learning model before and after training (the adapter picked on validation)."""
    recommender = tiny_recommender(cache, reasoning=config.mode == "recpo", **LEARNING_MODEL)
    trainer = R2ecTrainer(recommender, data, config)
    test_users = trainer.user_cache(data.test)
    zero_shot = measured_ndcg(trainer, data, test_users)
    result = trainer.train(out)
    recommender.load_adapter_weights(result.best_dir)
    return zero_shot, measured_ndcg(trainer, data, test_users), result.budget


def popularity_ndcg(data: PreparedData) -> float:
    popularity = Popularity()
    popularity.fit(data)
    return ranking_metrics(sample_ranks(popularity, data.test))["ndcg@10"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "config"),
    [
        ("contrastive", TrainConfig(mode="contrastive", max_steps=200, batch_size=16, learning_rate=3e-4)),
        (
            "recpo",
            TrainConfig(mode="recpo", max_steps=60, batch_size=16, group_size=4, learning_rate=2e-3, max_new_tokens=2),
        ),
    ],
)
def test_training_beats_zero_shot_and_popularity_on_planted_preferences(
    mode: str, config: TrainConfig, tiny_cache: Path, synthetic_data: PreparedData, tmp_path: Path
) -> None:
    config = replace(config, eval_every=config.max_steps // 4, eval_samples=300)
    zero_shot, trained, budget = train_on(synthetic_data, config, tiny_cache, tmp_path)
    print(f"{mode}: test NDCG@10 zero-shot {zero_shot:.4f} -> trained {trained:.4f}; budget {budget}")
    assert trained > 1.3 * zero_shot
    assert trained - zero_shot > 0.015
    assert trained > popularity_ndcg(synthetic_data)


@pytest.mark.slow
def test_contrastive_training_learns_item_popularity(tiny_cache: Path, tmp_path: Path) -> None:
    """A log whose only signal is popularity (one cluster, Zipf draws; titles give no hint of it).

    The model must push down the items that are seldom a target: it only can if negatives carry gradient.
    """
    data = prepare("synthetic", *generate_synthetic(n_clusters=1, preference=1.0))
    config = TrainConfig(
        mode="contrastive", max_steps=200, batch_size=16, learning_rate=1e-3, eval_every=50, eval_samples=300
    )
    zero_shot, trained, _ = train_on(data, config, tiny_cache, tmp_path)
    print(f"popularity-only log: test NDCG@10 zero-shot {zero_shot:.4f} -> trained {trained:.4f}")
    assert trained > 2.5 * zero_shot
