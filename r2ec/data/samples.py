"""Samples and the global temporal split of method.md §4.

One sample per (user, next interaction): the history is up to ``max_history`` previous items of that user
(oldest first), the target is the next item. Samples are ordered by target time, ties broken by the log's
original row order (a stable sort), then cut 80 / 10 / 10 into train / valid / test. A test or validation
sample is *cold* when its target item is never the target of a training sample.

An *item holdout* (``PreparedData.hold_out_items``) hides a random share of the items that training chose from
training altogether, so that the cold slice also holds items that are not new releases: a test of whether the
text item tower ranks an item no model was trained on, apart from how fresh it is.
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

    def hold_out_items(self, items: np.ndarray) -> PreparedData:
        """This data with ``items`` hidden from training; validation and test are unchanged but for ``cold``.

        Training samples that target one of them are dropped, and they are cut out of the other training
        histories (a sample left without history is dropped too), so that no model sees them in training, as a
        target or as context. Validation and test samples whose target is one of them become cold.
        """
        train = without_items(self.train, items)
        valid, test = with_cold_flags(self.valid, train), with_cold_flags(self.test, train)
        return replace(self, train=train, valid=valid, test=test)


def held_out_items(data: PreparedData, fraction: float, seed: int = 0) -> np.ndarray:
    """A seeded, uniform random ``fraction`` of the distinct items that training chose (sorted catalogue indices)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out share of items must lie strictly between 0 and 1, got {fraction}")
    chosen = np.unique(data.train.target)
    n = max(1, round(fraction * len(chosen)))
    return np.sort(np.random.default_rng(seed).choice(chosen, n, replace=False))


def without_items(samples: Samples, items: np.ndarray) -> Samples:
    """``samples`` without those that target ``items``, with ``items`` cut out of the other histories.

    A history keeps its remaining items in order, left-aligned and re-padded; samples left with an empty
    history are dropped, as ``build_samples`` never makes one.
    """
    kept = np.isin(samples.history, items, invert=True) & (samples.history != PAD)
    rows = np.isin(samples.target, items, invert=True) & kept.any(axis=1)
    kept, part = kept[rows], samples.take(rows)
    order = np.argsort(~kept, axis=1, kind="stable")  # kept slots first, each group in its original order
    kept = np.take_along_axis(kept, order, axis=1)

    def compact(values: np.ndarray, pad: float) -> np.ndarray:
        return np.where(kept, np.take_along_axis(values, order, axis=1), pad).astype(values.dtype)

    return replace(
        part,
        history=compact(part.history, PAD),
        history_rating=compact(part.history_rating, np.nan),
        history_time=compact(part.history_time, 0),
    )


def with_cold_flags(part: Samples, train: Samples) -> Samples:
    """``part`` with ``cold`` set where its target is never a target of ``train``."""
    return replace(part, cold=np.isin(part.target, np.unique(train.target), invert=True))


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
    return train, with_cold_flags(valid, train), with_cold_flags(test, train)


def catalogue_index(items: pd.DataFrame) -> dict[str, int]:
    """Item id -> catalogue index (its row in ``items``)."""
    return {item_id: i for i, item_id in enumerate(items["item_id"])}


def prepare(name: str, interactions: pd.DataFrame, items: pd.DataFrame, max_history: int = 20) -> PreparedData:
    """Samples and splits of a canonical (interactions, items) pair."""
    item_index = catalogue_index(items)
    return split_samples(name, items, *build_samples(interactions, item_index, max_history))


def split_samples(name: str, items: pd.DataFrame, samples: Samples, source_row: np.ndarray) -> PreparedData:
    """The temporal splits of samples built elsewhere (e.g. read through a feature store) over ``items``."""
    train, valid, test = temporal_split(samples, source_row)
    return PreparedData(name=name, items=items, train=train, valid=valid, test=test, item_index=catalogue_index(items))
