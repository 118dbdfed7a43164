"""Job: fit (or load) one recommender and report full-ranking metrics on the test split."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from r2ec.data.samples import PreparedData
from r2ec.evaluation.evaluator import evaluate, evaluation_subset
from r2ec.recommender import Recommender
from services.datastore import load_prepared
from services.jobs.resources import inference_model, peak_rss_mb
from services.settings import Settings

BASELINES = ("popularity", "sasrec", "content")
DOMAIN_OF_DATASET = {"ml-100k": "movies"}
MODELS = (*BASELINES, "r2ec")


def build_baseline(name: str, seed: int) -> Recommender:
    """A fresh, untrained baseline by name."""
    if name == "popularity":
        from r2ec.baselines.popularity import Popularity

        return Popularity()
    if name == "sasrec":
        from r2ec.baselines.sasrec import SASRec, SASRecConfig

        return SASRec(SASRecConfig(seed=seed))
    if name == "content":
        from r2ec.baselines.content import ContentConfig, ContentModel

        return ContentModel(ContentConfig(seed=seed))
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(BASELINES)}")


def domain_of(dataset: str) -> str:
    """How prompts name a dataset's items (``items`` when the dataset has no domain of its own)."""
    return DOMAIN_OF_DATASET.get(dataset, "items")


def build_r2ec(settings: Settings, data: PreparedData, checkpoint: Path | None) -> tuple[Recommender, str]:
    """A trained checkpoint, or the untrained backbone (zero-shot) with the model of the CPU recipes."""
    from r2ec.modeling.recommender import R2ecRecommender
    from r2ec.training.recipes import CPU_MODEL

    cache = settings.root / "cache"
    if checkpoint is None:
        config = replace(CPU_MODEL, prompts=replace(CPU_MODEL.prompts, domain=domain_of(data.name)))
        generation = replace(config.generation, batch_size=settings.inference_batch_size)
        config = replace(config, dtype=settings.dtype or config.dtype, generation=generation)
        recommender = R2ecRecommender.create(config, cache)
    else:
        recommender = inference_model(settings, checkpoint)
    if checkpoint is None:
        return recommender, "r2ec-zero-shot"
    return recommender, "r2ec-recpo" if recommender.config.reasoning else "r2ec-contrastive"


def run(
    settings: Settings,
    run_id: str,
    model: str,
    dataset: str | None = None,
    split: str = "test",
    checkpoint: Path | None = None,
    max_samples: int | None = None,
    popularity_prior: bool = False,
    new_item_slots: int = 0,
    new_item_max_age_years: int | None = None,
) -> dict[str, Any]:
    """Fit (or load) ``model``, evaluate on ``split``; the JSON shape of ``r2ec evaluate``.

    ``max_samples`` evaluates a fixed, seeded subset of that many samples plus the whole cold-start slice
    (the LLM modes are too slow for the full split on a CPU); the result says so. ``popularity_prior`` adds
    weight * log(1 + training count) to the model's scores, the weight chosen on validation; the row is named
    ``<model>+popularity-prior`` so it is never mistaken for the model alone. ``new_item_slots`` > 0 gives that many
    of every top 10 to the best-scored items nobody chose in training (row ``<model>+new-item-slots``);
    ``new_item_max_age_years`` limits those to new releases (``r2ec.new_item_slots.new_items``).
    """
    if new_item_max_age_years is not None and not new_item_slots:
        raise ValueError("a new-item age limit (--new-item-max-age-years) only applies with new-item slots")
    started = time.perf_counter()
    data = load_prepared(settings, dataset)
    if model == "r2ec":
        recommender, model = build_r2ec(settings, data, checkpoint)
    else:
        recommender = build_baseline(model, settings.seed)
    if popularity_prior:
        from r2ec.baselines.popularity import PopularityPrior

        recommender, model = PopularityPrior(recommender, seed=settings.seed), f"{model}+popularity-prior"
    if new_item_slots:
        from r2ec.new_item_slots import NewItemSlots

        recommender = NewItemSlots(recommender, slots=new_item_slots, max_age_years=new_item_max_age_years)
        model = f"{model}+new-item-slots"
    samples, overall = data.split(split), None
    if max_samples is not None:
        samples, overall = evaluation_subset(samples, max_samples, settings.seed)
    budget = recommender.fit(data, progress=settings.show_progress)
    report = evaluate(
        recommender, samples, batch_size=settings.inference_batch_size, progress=settings.show_progress, overall=overall
    )
    return {
        "run_id": run_id,
        "model": model,
        "subset": None if max_samples is None else f"{max_samples} seeded samples + all cold-start ones",
        "dataset": data.name,
        **report.as_dict(split),
        "budget": budget,
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
