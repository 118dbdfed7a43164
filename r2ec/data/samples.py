"""Samples and the global temporal split of method.md §4.

One sample per (user, next interaction): the history is up to ``max_history`` previous items of that user
(oldest first), the target is the next item. Samples are ordered by target time, ties broken by the log's
original row order (a stable sort), then cut 80 / 10 / 10 into train / valid / test. A test or validation
sample is *cold* when its target item is never the target of a training sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

SPLITS = ("train", "valid", "test")
PAD = -1


@dataclass(frozen=True)
class Samples:
    """A batch-friendly table of samples; item ids are catalogue indices (``PAD`` = -1 pads histories).

    Shapes: ``n`` samples, ``h`` = max_history. Histories are right-padded, oldest item first.
    """

    user_id: np.ndarray  # (n,) str
    history: np.ndarray  # (n, h) int64
    history_rating: np.ndarray  # (n, h) float32, NaN for pads and missing ratings
    history_time: np.ndarray  # (n, h) int64 seconds since epoch, 0 for pads
    target: np.ndarray  # (n,) int64
    target_time: np.ndarray  # (n,) int64 seconds since epoch
    cold: np.ndarray  # (n,) bool: target never a train target

    def __len__(self) -> int:
        return len(self.target)

    @property
    def history_len(self) -> np.ndarray:
        return (self.history != PAD).sum(axis=1)

    def take(self, index: np.ndarray | slice) -> Samples:
        """Rows ``index`` of every array, as a new Samples."""
        return Samples(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})

    def upcoming_targets(self, k: int) -> np.ndarray:
        """(n, k) int64: each sample's target, then the targets of the same user's next ``k - 1`` samples in time.

        ``PAD`` past a user's last sample in this table; only this table's samples count, so the training split
        never reaches into the later validation or test windows.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        order = np.lexsort((np.arange(len(self)), self.target_time, self.user_id))
        users, targets = self.user_id[order], self.target[order]
        upcoming = np.full((len(self), k), PAD, dtype=np.int64)
        for j in range(k):  # sorted row i's j-th upcoming target is sorted row i + j, if the same user's
            same_user = users[j:] == users[: len(users) - j]
            upcoming[order[: len(order) - j], j] = np.where(same_user, targets[j:], PAD)
        return upcoming


@dataclass(frozen=True)
class PreparedData:
    """A dataset ready for training and evaluation: catalogue, index maps and the three splits."""

    name: str
    items: pd.DataFrame  # canonical items; row i is catalogue index i
    train: Samples
    valid: Samples
    test: Samples
    item_index: dict[str, int] = field(repr=False)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def train_target_counts(self) -> np.ndarray:
        """(n_items,) int64: how often each item is the target of a training sample (its training popularity)."""
        return np.bincount(self.train.target, minlength=self.n_items)

    def split(self, name: str) -> Samples:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


def build_samples(
    interactions: pd.DataFrame, item_index: dict[str, int], max_history: int = 20
) -> tuple[Samples, np.ndarray]:
    """All (history, target) samples of a log, in the log's order of targets.

    Returns the samples and, per sample, the original row number of its target (the tie-break key).
    Interactions with an item outside ``item_index`` must have been removed (validation does it).
    """
    if max_history < 1:
        raise ValueError("max_history must be >= 1")
    log = interactions.reset_index(drop=True)
    order = np.lexsort((np.arange(len(log)), log["event_time"].to_numpy(), log["user_id"].to_numpy()))
    users = log["user_id"].to_numpy()[order]
    items = log["item_id"].map(item_index).to_numpy()[order]
    if pd.isna(items).any():
        raise ValueError("interactions reference items outside the catalogue")
    items = items.astype(np.int64)
    times = log["event_time"].dt.tz_convert(None).to_numpy().astype("datetime64[s]").astype(np.int64)[order]
    ratings = log["rating"].to_numpy(dtype=np.float32)[order]

    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    position = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    targets = np.flatnonzero(position >= 1)

    # history slot j of a sample with L previous items (L <= max_history) is sorted row t - L + j
    length = np.minimum(position[targets], max_history)
    slots = np.arange(max_history)[None, :]
    keep = slots < length[:, None]
    safe = np.where(keep, targets[:, None] - length[:, None] + slots, 0)

    samples = Samples(
        user_id=users[targets],
        history=np.where(keep, items[safe], PAD),
        history_rating=np.where(keep, ratings[safe], np.nan).astype(np.float32),
        history_time=np.where(keep, times[safe], 0),
        target=items[targets],
        target_time=times[targets],
        cold=np.zeros(len(targets), dtype=bool),
    )
    return samples, order[targets]


def temporal_split(
    samples: Samples, source_row: np.ndarray, fractions: tuple[float, float] = (0.8, 0.1)
) -> tuple[Samples, Samples, Samples]:
    """Global temporal split by target time (stable on ``source_row``) and the cold-start flag."""
    order = np.lexsort((source_row, samples.target_time))
    n = len(order)
    cut_train, cut_valid = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
    train, valid, test = (
        samples.take(order[:cut_train]),
        samples.take(order[cut_train:cut_valid]),
        samples.take(order[cut_valid:]),
    )
    seen = np.unique(train.target)
    with_cold = [
        part if part is train else replace(part, cold=~np.isin(part.target, seen)) for part in (train, valid, test)
    ]
    return with_cold[0], with_cold[1], with_cold[2]


def prepare(name: str, interactions: pd.DataFrame, items: pd.DataFrame, max_history: int = 20) -> PreparedData:
    """Samples and splits of a canonical (interactions, items) pair."""
    item_index = {item_id: i for i, item_id in enumerate(items["item_id"])}
    samples, source_row = build_samples(interactions, item_index, max_history)
    train, valid, test = temporal_split(samples, source_row)
    return PreparedData(name=name, items=items, train=train, valid=valid, test=test, item_index=item_index)
