"""The synthetic generator: deterministic, canonical, and the cluster readable from the title."""

from __future__ import annotations

import pandas as pd
import pytest

from r2ec.data.datasets import load_dataset
from r2ec.data.synthetic import QUALIFIERS, THEMES, generate_synthetic


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = generate_synthetic(seed=5), generate_synthetic(seed=5), generate_synthetic(seed=6)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert not a[0].equals(c[0])


def test_registered_and_canonical() -> None:
    interactions, items = load_dataset("synthetic")
    assert list(interactions.columns) == ["user_id", "item_id", "event_time", "rating"]
    assert interactions["item_id"].isin(items["item_id"]).all()
    assert interactions["event_time"].is_monotonic_increasing
    assert not interactions.duplicated(["user_id", "item_id"]).any()  # no repeats


@pytest.mark.parametrize("n_clusters", [6, 30])
def test_title_words_name_the_cluster(n_clusters: int) -> None:
    _, items = generate_synthetic(n_users=5, n_items=3 * n_clusters, n_clusters=n_clusters)
    word_to_theme = {w: theme for theme, (_, words) in THEMES.items() for w in words}
    clusters_seen: dict[tuple, set[int]] = {}
    for title, cluster in zip(items["title"], items["cluster"], strict=True):
        words = title.split()
        themes = {word_to_theme[w] for w in words if w in word_to_theme}
        qualifiers = {w for w in words if w in QUALIFIERS}
        assert len(themes) == 1 and len(qualifiers) <= 1, title
        clusters_seen.setdefault((*themes, *qualifiers), set()).add(int(cluster))
    # the (theme, qualifier) read from the words identifies exactly one cluster, and all clusters occur
    assert all(len(c) == 1 for c in clusters_seen.values())
    assert len(clusters_seen) == n_clusters


def test_users_prefer_a_few_clusters() -> None:
    interactions, items = generate_synthetic(n_users=100, preference=0.9, seed=1)
    cluster = interactions["item_id"].map(items.set_index("item_id")["cluster"])
    top_two = cluster.groupby(interactions["user_id"]).agg(lambda c: c.value_counts().iloc[:2].sum() / len(c))
    # 6 clusters: with no preference the top two would hold about a third of a user's items
    assert top_two.mean() > 0.8


def test_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="n_clusters"):
        generate_synthetic(n_clusters=0)
    with pytest.raises(ValueError, match="interactions_per_user"):
        generate_synthetic(interactions_per_user=(5, 2))
