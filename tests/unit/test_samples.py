"""Samples and the global temporal split of method.md §4, checked against brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from r2ec.data.samples import PAD, PreparedData, build_samples, held_out_items, prepare, temporal_split
from r2ec.data.synthetic import generate_synthetic


def brute_force_samples(interactions: pd.DataFrame, item_index: dict[str, int], h: int) -> list[tuple]:
    """One (user, history, target, source row) per interaction after a user's first, by a per-user loop."""
    out = []
    log = interactions.reset_index(drop=True)
    for user, rows in log.groupby("user_id", sort=True):
        rows = rows.sort_values("event_time", kind="stable")
        items = [item_index[i] for i in rows["item_id"]]
        for k in range(1, len(items)):
            out.append((user, tuple(items[max(0, k - h) : k]), items[k], rows.index[k]))
    return out


@pytest.mark.parametrize("max_history", [1, 3, 20])
def test_build_samples_matches_per_user_loop(max_history: int) -> None:
    interactions, items = generate_synthetic(n_users=40, n_items=60, interactions_per_user=(1, 12), seed=3)
    # coarse timestamps create many ties within a user, resolved by log order
    interactions["event_time"] = interactions["event_time"].dt.floor("7D")
    item_index = {item_id: i for i, item_id in enumerate(items["item_id"])}
    samples, source_row = build_samples(interactions, item_index, max_history)

    got = sorted(
        (u, tuple(int(x) for x in h[h != PAD]), int(t), int(r))
        for u, h, t, r in zip(samples.user_id, samples.history, samples.target, source_row, strict=True)
    )
    assert got == sorted(brute_force_samples(interactions, item_index, max_history))
    assert samples.history.shape[1] == max_history
    # pads only on the right
    real = samples.history != PAD
    assert (np.sort(real, axis=1)[:, ::-1] == real).all()


def test_split_is_temporal_and_80_10_10(synthetic_data: PreparedData) -> None:
    train, valid, test = synthetic_data.train, synthetic_data.valid, synthetic_data.test
    n = len(train) + len(valid) + len(test)
    assert (len(train), len(train) + len(valid)) == (int(n * 0.8), int(n * 0.9))
    assert train.target_time.max() <= valid.target_time.min()
    assert valid.target_time.max() <= test.target_time.min()


def test_ties_in_time_split_by_log_order() -> None:
    # 10 users x 4 interactions, all at the same instant: the split must follow the log's row order
    log = pd.DataFrame(
        {
            "user_id": [f"u{i % 10}" for i in range(40)],
            "item_id": [str(i) for i in range(40)],
            "event_time": pd.Timestamp("2024-01-01", tz="UTC"),
            "rating": np.nan,
        }
    )
    item_index = {str(i): i for i in range(40)}
    samples, source_row = build_samples(log, item_index)
    parts = temporal_split(samples, source_row)
    targets = [sorted(int(t) for t in part.target) for part in parts]
    # targets are rows 10..39 (each user's first row gives no sample); 30 samples -> 24 / 3 / 3
    assert targets == [list(range(10, 34)), list(range(34, 37)), list(range(37, 40))]
    again = temporal_split(*build_samples(log, item_index))
    assert all((a.target == b.target).all() for a, b in zip(parts, again, strict=True))


def test_cold_flag_marks_targets_never_trained_on(synthetic_data: PreparedData) -> None:
    seen = set(synthetic_data.train.target.tolist())
    assert not synthetic_data.train.cold.any()
    for part in (synthetic_data.valid, synthetic_data.test):
        expected = np.array([t not in seen for t in part.target.tolist()])
        assert (part.cold == expected).all()


def test_users_with_one_interaction_give_no_sample() -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a", "b", "b"],
            "item_id": ["x", "x", "y"],
            "event_time": pd.to_datetime([1, 2, 3], unit="s", utc=True),
            "rating": [5.0, 4.0, 3.0],
        }
    )
    data = prepare("tiny", log, pd.DataFrame({"item_id": ["x", "y"], "title": ["X", "Y"]}))
    assert len(data.train) + len(data.valid) + len(data.test) == 1


def test_upcoming_targets_follow_each_user_in_time_within_the_split(synthetic_data: PreparedData) -> None:
    train = synthetic_data.train
    upcoming = train.upcoming_targets(3)
    assert (upcoming[:, 0] == train.target).all()
    for user in np.unique(train.user_id)[:20]:
        rows = np.flatnonzero(train.user_id == user)
        rows = rows[np.argsort(train.target_time[rows], kind="stable")]
        later = [*train.target[rows].tolist(), PAD, PAD]
        for position, row in enumerate(rows):
            assert upcoming[row].tolist() == later[position : position + 3]
    # nothing from the later windows: a user's last training sample has no upcoming target beyond itself
    assert (upcoming == PAD).any()


def test_hold_out_items_hides_them_from_training_and_keeps_everything_else(synthetic_data: PreparedData) -> None:
    held = held_out_items(synthetic_data, 0.2, seed=1)
    data = synthetic_data.hold_out_items(held)
    hidden = set(held.tolist())

    # per original training sample, by a loop: dropped, or kept with the held-out items cut from its history
    expected = []
    for row in range(len(synthetic_data.train)):
        sample = synthetic_data.train.take(slice(row, row + 1))
        slots = [j for j, item in enumerate(sample.history[0].tolist()) if item != PAD and item not in hidden]
        if int(sample.target[0]) in hidden or not slots:
            continue
        expected.append(
            (
                sample.user_id[0],
                int(sample.target[0]),
                int(sample.target_time[0]),
                [int(sample.history[0, j]) for j in slots],
                [int(sample.history_time[0, j]) for j in slots],
                [float(sample.history_rating[0, j]) for j in slots],
            )
        )
    train = data.train
    got = [
        (
            train.user_id[i],
            int(train.target[i]),
            int(train.target_time[i]),
            train.history[i, : train.history_len[i]].tolist(),
            train.history_time[i, : train.history_len[i]].tolist(),
            train.history_rating[i, : train.history_len[i]].tolist(),
        )
        for i in range(len(train))
    ]
    assert got == expected
    assert len(train) < len(synthetic_data.train)
    assert (train.history[:, 1:] == PAD)[train.history[:, :-1] == PAD].all()  # pads only on the right
    assert not np.isin(train.history, held).any() and not np.isin(train.target, held).any()

    # validation and test keep their samples; targets now missing from training, held-out ones among them, are cold
    for before, after in ((synthetic_data.valid, data.valid), (synthetic_data.test, data.test)):
        assert (after.history == before.history).all() and (after.target == before.target).all()
        assert (after.cold == ~np.isin(after.target, train.target)).all()
        assert after.cold[np.isin(after.target, held)].all() and (after.cold >= before.cold).all()


def test_held_out_items_are_a_seeded_share_of_the_items_training_chose(synthetic_data: PreparedData) -> None:
    chosen = np.unique(synthetic_data.train.target)
    held = held_out_items(synthetic_data, 0.25, seed=3)
    assert len(held) == round(0.25 * len(chosen)) and np.isin(held, chosen).all()
    assert (held == held_out_items(synthetic_data, 0.25, seed=3)).all()
    assert not np.array_equal(held, held_out_items(synthetic_data, 0.25, seed=4))
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            held_out_items(synthetic_data, share)
