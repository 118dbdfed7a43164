"""The item-id-free content model: it learns from genres and release year only, so it cannot tell apart two
items that share them, and it still learns planted preferences whose clusters the genres name."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

from r2ec.baselines.content import ContentConfig, ContentModel, item_features
from r2ec.baselines.popularity import Popularity
from r2ec.data.samples import PreparedData, prepare
from r2ec.data.synthetic import generate_synthetic
from r2ec.evaluation.evaluator import evaluate

FAST = ContentConfig(max_epochs=10, patience=3, batch_size=128, lr=3e-3, seed=1)
CLUSTERS = 24  # item i is in cluster i % CLUSTERS, whose genres it carries; 10 items a cluster tie on features


@pytest.fixture(scope="module")
def clustered() -> PreparedData:
    """Clusters small enough for a top 10: every item of a cluster scores alike, and ties count against a target."""
    return prepare("synthetic", *generate_synthetic(n_clusters=CLUSTERS))


@pytest.fixture(scope="module")
def content(clustered: PreparedData) -> tuple[ContentModel, dict]:
    model = ContentModel(FAST)
    return model, model.fit(clustered)


def test_content_model_learns_planted_preferences(clustered: PreparedData, content: tuple[ContentModel, dict]) -> None:
    model, budget = content
    popularity = Popularity()
    popularity.fit(clustered)
    ours = evaluate(model, clustered.test).overall["ndcg@10"]
    theirs = evaluate(popularity, clustered.test).overall["ndcg@10"]
    assert ours > 2 * theirs, (ours, theirs)
    assert 1 <= budget["best_epoch"] <= budget["epochs"] <= FAST.max_epochs


def test_items_with_the_same_genres_and_year_score_alike(
    clustered: PreparedData, content: tuple[ContentModel, dict]
) -> None:
    """Items 0 and CLUSTERS share every feature, items 0 and 1 do not: no item id can leak into the scores."""
    model, _ = content
    features = item_features(clustered)
    assert torch.equal(features[0], features[CLUSTERS]) and not torch.equal(features[0], features[1])
    scores = model.full_sort_predict(clustered.test.take(slice(0, 32)))
    assert torch.allclose(scores[:, 0], scores[:, CLUSTERS])
    assert not torch.allclose(scores[:, 0], scores[:, 1])


def test_release_years_group_by_year_when_recent_and_by_decade_before(clustered: PreparedData) -> None:
    items = pd.DataFrame(
        {
            "item_id": list("abcdef"),
            "title": list("abcdef"),
            "genres": ["Drama", "Drama", "Drama, Comedy", "Drama", "Drama", None],
            "year": pd.array([1998, 1990, 1985, 1981, None, 1998], dtype="Int64"),
        }
    )
    features = item_features(replace(clustered, items=items))
    assert features.shape[1] == 6  # Comedy, Drama; 1990, 1998; 1980s; unknown
    assert features.sum(1).tolist() == [2, 2, 3, 2, 2, 1]
    assert (features[2] - features[3]).abs().sum() == 1  # 1985 and 1981 share the 1980s: only Comedy differs
    assert (features[0] * features[1]).sum() == 1  # 1998 and 1990 are separate years: only Drama is shared
    assert (features[0] * features[5]).sum() == 1  # the same year, no genres
    assert ((features[4] * features[:4]).sum(1) == 1).all()  # an unknown year is no year of the others
