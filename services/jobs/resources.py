"""What the jobs share: the memory they report, and a checkpoint loaded for inference as the settings say."""

from __future__ import annotations

import resource
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from services.settings import Settings

if TYPE_CHECKING:
    from r2ec.modeling.recommender import R2ecRecommender


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inference_model(settings: Settings, checkpoint: Path) -> R2ecRecommender:
    """A checkpoint for scoring, indexing or explaining: weights in ``settings.dtype`` (None: the checkpoint's own)
    and reasoning generated ``settings.inference_batch_size`` users at a time."""
    from r2ec.modeling.recommender import R2ecRecommender

    recommender = R2ecRecommender.load(checkpoint, settings.root / "cache", settings.dtype)
    generation = replace(recommender.config.generation, batch_size=settings.inference_batch_size)
    recommender.config = replace(recommender.config, generation=generation)
    return recommender
