"""Full-ranking metrics against hand-computed ranks and values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from r2ec.evaluation.metrics import in_top_k, median_rank, ndcg_gain, ranking_metrics, target_ranks


def ranks(scores: list[list[float]], target: list[int], history: list[list[int]]) -> list[int]:
    return target_ranks(torch.tensor(scores), torch.tensor(target), torch.tensor(history)).tolist()


def test_rank_counts_strictly_higher_items_plus_one() -> None:
    # target 2 (0.5): items 1 (0.9) and 3 (0.7) are higher
    assert ranks([[0.1, 0.9, 0.5, 0.7, 0.3]], [2], [[-1]]) == [3]


def test_ties_count_against_the_model() -> None:
    # target 2 ties with item 3; item 1 is higher -> rank 1 + 1 + 1
    assert ranks([[0.1, 0.9, 0.5, 0.5, 0.3]], [2], [[-1]]) == [3]
    # a constant scorer puts every target last among the 5 unmasked items
    assert ranks([[1.0] * 5, [1.0] * 5], [0, 4], [[-1, -1], [-1, -1]]) == [5, 5]


@pytest.mark.parametrize("as_array", [np.array, torch.tensor])
def test_in_top_k_includes_k_and_never_counts_a_masked_target(as_array) -> None:
    # rank 0 = target masked as history: a miss however small k is
    assert in_top_k(as_array([0, 1, 10, 11]), 10).tolist() == [False, True, True, False]


@pytest.mark.parametrize("as_array", [np.array, torch.tensor])
def test_ndcg_gain_is_the_inverse_log_rank_inside_k_and_zero_outside(as_array) -> None:
    gains = ndcg_gain(as_array([0, 1, 3, 10, 11]), 10).tolist()
    assert gains == pytest.approx([0.0, 1.0, 0.5, 1 / math.log2(11), 0.0])


def test_median_rank_counts_a_masked_target_as_last() -> None:
    # ranks 2 and 4 plus one masked target of 100 items: the median is 4, not 2 (as if the masked one ranked 0)
    assert median_rank(np.array([2, 0, 4]), n_items=100) == 4.0


def test_history_items_are_masked() -> None:
    # item 1 (0.9) is in the history, so only item 3 beats the target; pads (-1) mask nothing
    assert ranks([[0.1, 0.9, 0.5, 0.7, 0.3]], [2], [[1, -1]]) == [2]
    # a masked history item never ties with the target either
    assert ranks([[0.5, 0.5, 0.1]], [0], [[1, -1]]) == [1]


def test_target_in_history_is_a_miss() -> None:
    assert ranks([[0.1, 0.9, 0.5]], [1], [[1, 0]]) == [0]


def test_metrics_from_ranks_by_hand() -> None:
    metrics = ranking_metrics(np.array([1, 3, 6, 0]), ks=(5, 10))
    assert metrics["hr@5"] == pytest.approx(2 / 4)  # ranks 1 and 3; 6 is beyond K, 0 is a miss
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert metrics["hr@10"] == pytest.approx(3 / 4)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(7)) / 4)


def test_rank_exactly_k_is_a_hit_and_k_plus_one_is_not() -> None:
    assert ranking_metrics(np.array([5]), ks=(5,))["hr@5"] == 1.0
    assert ranking_metrics(np.array([6]), ks=(5,)) == {"ndcg@5": 0.0, "hr@5": 0.0}


def test_empty_split_scores_zero() -> None:
    assert ranking_metrics(np.array([], dtype=np.int64), ks=(10,)) == {"ndcg@10": 0.0, "hr@10": 0.0}
