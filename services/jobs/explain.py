"""Job: show what the model thinks of one user: history, reasoning, and the top-10 titles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from r2ec.data.samples import PAD, Samples
from r2ec.inference import rank_catalogue
from services.datastore import load_prepared
from services.jobs.resources import inference_model
from services.settings import Settings


def latest_sample(splits: list[Samples], user_id: str) -> Samples:
    """The user's most recent sample across splits; ValueError when the user has none."""
    best: Samples | None = None
    for samples in splits:
        rows = np.flatnonzero(samples.user_id == user_id)
        if len(rows) and (best is None or samples.target_time[rows[-1]] >= best.target_time[0]):
            best = samples.take(rows[-1:])
    if best is None:
        raise ValueError(f"user {user_id!r} has no sample (unknown user or a single interaction)")
    return best


def run(
    settings: Settings, run_id: str, checkpoint: Path, user_id: str, dataset: str | None = None, k: int = 10
) -> dict[str, Any]:
    data = load_prepared(settings, dataset)
    sample = latest_sample([data.train, data.valid, data.test], user_id)
    recommender = inference_model(settings, checkpoint)
    recommender.set_catalogue(data.items, progress=settings.show_progress)
    readout, ranked = rank_catalogue(recommender, sample, k)
    titles = data.items["title"].to_numpy()
    history = sample.history[0][sample.history[0] != PAD]
    return {
        "run_id": run_id,
        "user_id": user_id,
        "history": [str(t) for t in titles[history]],
        "reasoning": readout.rationales[0],
        "recommendations": [
            {"rank": r + 1, "item_id": str(data.items["item_id"].iloc[i]), "title": str(titles[i]), "score": float(s)}
            for r, (i, s) in enumerate(zip(ranked.items[0].tolist(), ranked.scores[0].tolist(), strict=True))
        ],
        "actual_next": str(titles[sample.target[0]]),
    }
