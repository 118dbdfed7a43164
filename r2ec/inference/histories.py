"""Per-user history lists (as a feature store serves them) -> the model's right-padded ``Samples``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from r2ec.data.samples import PAD, Samples


def samples_from_histories(
    user_ids: Sequence[str],
    histories: Sequence[Sequence[int]],
    ratings: Sequence[Sequence[float]] | None,
    times: Sequence[Sequence[int]] | None,
    target_times: Sequence[int] | np.ndarray,
    max_history: int,
    targets: Sequence[int] | np.ndarray | None = None,
) -> Samples:
    """One sample per user: the last ``max_history`` items of each history (catalogue indices, oldest first).

    Args:
        histories: catalogue indices per user, oldest first; an empty list gives an all-``PAD`` row.
        ratings, times: aligned with ``histories`` (None: NaN ratings, time 0); times in epoch seconds.
        target_times: the moment each user is scored (epoch seconds): prompts state elapsed times from it.
        targets: the next item per user where known (training, evaluation); ``PAD`` otherwise.
    """
    n = len(histories)
    if max_history < 1:
        raise ValueError("max_history must be >= 1")
    history = np.full((n, max_history), PAD, dtype=np.int64)
    history_rating = np.full((n, max_history), np.nan, dtype=np.float32)
    history_time = np.zeros((n, max_history), dtype=np.int64)
    for row, items in enumerate(histories):
        kept = slice(max(len(items) - max_history, 0), len(items))
        width = len(items) - kept.start
        history[row, :width] = np.asarray(items, dtype=np.int64)[kept]
        if ratings is not None:
            history_rating[row, :width] = np.asarray(ratings[row], dtype=np.float32)[kept]
        if times is not None:
            history_time[row, :width] = np.asarray(times[row], dtype=np.int64)[kept]
    return Samples(
        user_id=np.asarray([str(u) for u in user_ids], dtype=object).astype(str),
        history=history,
        history_rating=history_rating,
        history_time=history_time,
        target=np.full(n, PAD, dtype=np.int64) if targets is None else np.asarray(targets, dtype=np.int64),
        target_time=np.asarray(target_times, dtype=np.int64),
        cold=np.zeros(n, dtype=bool),
    )
