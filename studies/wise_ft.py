"""Does weight-space ensembling with the untrained backbone (WiSE-FT) give back the cold start that training took?

The untrained model puts 3 of the 148 cold-start targets in its top 10 by text similarity alone, trained checkpoints
none (``benchmarks/results/quality.md``). Scaling a LoRA adapter's update by ``s`` in [0, 1] is WiSE-FT between the
backbone (s = 0) and the trained model (s = 1); peft does it with ``rescale_adapter_scale``. This scores one
checkpoint at each scale on a seeded subset of validation samples (warm accuracy, where a scale would be chosen) and
on the cold-start slices of validation and test. The centring vector is refit for each scale: it is the mean of that
model's own item vectors. ``--items-only`` scales the item tower alone and keeps the user tower as trained: is it
the item side's text geometry that training overrides, as an item-side regulariser towards the backbone would
assume?

``.venv/bin/python -m studies.wise_ft CHECKPOINT [--scales 1,0.8,0.65,0.5] [--valid-samples 300] [--items-only]
[--name STEM]`` writes ``studies/results/<STEM>.{json,md,png}`` (default ``wise_ft``); weights in float32 unless
``R2EC_DTYPE`` says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from peft.helpers import rescale_adapter_scale
from tqdm import tqdm

from benchmarks.report import invocation, write_results
from r2ec.data.samples import Samples
from r2ec.evaluation.evaluator import evaluate, evaluation_subset
from r2ec.evaluation.metrics import in_top_k, median_rank
from r2ec.modeling.recommender import R2ecRecommender
from services.datastore import load_prepared
from services.settings import load_settings
from studies import RESULTS

DATASET = "ml-100k"


def scale_figures(
    model: R2ecRecommender,
    items: pd.DataFrame,
    scale: float,
    items_only: bool,
    valid: Samples,
    valid_overall: np.ndarray,
    test_cold: Samples,
    batch_size: int,
) -> dict[str, float]:
    """Validation NDCG@10 and cold-start figures with the LoRA update scaled by ``scale`` (item tower or both)."""
    with rescale_adapter_scale(model.model, scale):
        model.set_catalogue(items, refit_mean=True)
    with rescale_adapter_scale(model.model, 1.0 if items_only else scale):
        on_valid = evaluate(model, valid, batch_size=batch_size, overall=valid_overall)
        on_cold = evaluate(model, test_cold, batch_size=batch_size)
    return {
        "valid NDCG@10": round(on_valid.overall["ndcg@10"], 4),
        "valid cold NDCG@10": round(on_valid.cold["ndcg@10"], 4),
        "valid cold targets in the top 10": int(in_top_k(on_valid.ranks[valid.cold], 10).sum()),
        "test cold NDCG@10": round(on_cold.overall["ndcg@10"], 4),
        "test cold targets in the top 10": int(in_top_k(on_cold.ranks, 10).sum()),
        "test cold median rank": median_rank(on_cold.ranks, len(items)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a trained RUN/contrastive/best folder")
    parser.add_argument("--scales", default="1,0.8,0.65,0.5", help="comma-separated LoRA scales in [0, 1]")
    parser.add_argument("--valid-samples", type=int, default=300, help="seeded validation samples (plus its cold ones)")
    parser.add_argument("--items-only", action="store_true", help="scale the item tower only, users as trained")
    parser.add_argument("--name", default="wise_ft", help="results file stem under studies/results")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    if not all(0.0 <= s <= 1.0 for s in scales):
        parser.error(f"scales must lie in [0, 1], got {args.scales}")
    settings = load_settings(progress=False)
    data = load_prepared(settings, DATASET)
    model = R2ecRecommender.load(args.checkpoint, settings.root / "cache", settings.dtype or "float32")
    valid, valid_overall = evaluation_subset(data.valid, args.valid_samples)
    test_cold = data.test.take(np.flatnonzero(data.test.cold))
    figures: dict[str, float] = {
        "valid samples (seeded)": int(valid_overall.sum()),
        "valid cold samples": int(valid.cold.sum()),
        "test cold samples": len(test_cold),
    }
    per_scale = {}
    for scale in tqdm(scales, desc="LoRA scales"):
        per_scale[scale] = scale_figures(
            model, data.items, scale, args.items_only, valid, valid_overall, test_cold, settings.inference_batch_size
        )
    for scale, values in per_scale.items():
        figures.update({f"scale {scale:g}: {figure}": value for figure, value in values.items()})
    notes = [
        f"Checkpoint: {args.checkpoint}. Scale 1 is the checkpoint as trained, 0 the untrained backbone"
        + (" (item tower only; user vectors as trained)." if args.items_only else " (both towers)."),
        f"Weights dtype: {model.config.dtype}; one run. A cold target masked as history ranks last in the median.",
    ]
    write_results(args.name, invocation("studies.wise_ft"), figures, notes, RESULTS)
    plot_tradeoff(per_scale, RESULTS / f"{args.name}.png", "item tower only" if args.items_only else "both towers")


def plot_tradeoff(per_scale: dict[float, dict[str, float]], out: Path, towers: str) -> None:
    """Warm accuracy (validation NDCG@10) and cold-start hits against the LoRA scale, in one picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    scales = sorted(per_scale)
    figure, warm_axes = plt.subplots(figsize=(6.5, 4))
    warm_axes.plot(scales, [per_scale[s]["valid NDCG@10"] for s in scales], marker="o", color="tab:blue")
    warm_axes.set_xlabel("LoRA scale (0 = untrained backbone, 1 = as trained)")
    warm_axes.set_ylabel("validation NDCG@10 (seeded subset)", color="tab:blue")
    cold_axes = warm_axes.twinx()
    cold_hits = [per_scale[s]["test cold targets in the top 10"] for s in scales]
    cold_axes.plot(scales, cold_hits, marker="s", color="tab:red")
    cold_axes.set_ylabel("cold-start test targets in the top 10", color="tab:red")
    cold_axes.set_ylim(0, max(3, *cold_hits) + 0.5)  # whole hits; an all-zero line stays readable
    cold_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    warm_axes.set_title(f"WiSE-FT of one checkpoint ({towers}): warm accuracy against cold-start hits", fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
