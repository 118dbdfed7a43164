"""Job: fit (or load) one recommender and report full-ranking metrics on the test split."""

from __future__ import annotations

import resource
import time
from typing import Any

from r2ec.evaluation.evaluator import evaluate
from r2ec.recommender import Recommender
from services.datastore import load_prepared
from services.settings import Settings

BASELINES = ("popularity", "sasrec")


def build_baseline(name: str, seed: int) -> Recommender:
    """A fresh, untrained baseline by name."""
    if name == "popularity":
        from r2ec.baselines.popularity import Popularity

        return Popularity()
    if name == "sasrec":
        from r2ec.baselines.sasrec import SASRec, SASRecConfig

        return SASRec(SASRecConfig(seed=seed))
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(BASELINES)}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(settings: Settings, model: str, dataset: str | None = None, split: str = "test") -> dict[str, Any]:
    """Fit ``model`` on the train split, evaluate on ``split``; the JSON shape of ``r2ec evaluate``."""
    started = time.perf_counter()
    recommender = build_baseline(model, settings.seed)
    data = load_prepared(settings, dataset)
    budget = recommender.fit(data, progress=bool(settings.progress))
    report = evaluate(recommender, data.split(split), progress=bool(settings.progress))
    return {
        "model": model,
        "dataset": data.name,
        **report.as_dict(split),
        "budget": budget,
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
