"""Where R²ec puts the targets of the cold-start slice: among all items, and among the items nobody chose in training.

Trained rows score 0 to 3 hits of 148 on the cold slice (``benchmarks/results/quality.md``, ``quality_h100.md``).
This asks whether the item tower still orders the never-chosen items sensibly for those users (then a reserved "new
items" slot, filled by the model's best never-chosen item, would recover them) or has lost that too.

``.venv/bin/python -m studies.cold_start [--name STEM] [CHECKPOINT ...]`` scores ML-100k's cold-start test
samples with the untrained model and each checkpoint (w/o reasoning; set ``R2EC_DTYPE`` for the weights' dtype)
and writes ``studies/results/<STEM>.{json,md}`` (default ``cold_start``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.report import invocation, write_results
from r2ec.data.samples import PreparedData
from r2ec.evaluation.metrics import in_top_k, median_rank, target_ranks
from r2ec.recommender import Recommender
from services.datastore import load_prepared
from services.jobs.evaluate import build_r2ec
from services.settings import load_settings
from studies import RESULTS

DATASET = "ml-100k"


def rank_figures(model: Recommender, data: PreparedData, batch_size: int) -> dict[str, float]:
    """Target ranks of the cold test samples among all items and among never-chosen ones (history masked)."""
    cold = data.test.take(np.flatnonzero(data.test.cold))
    chosen = torch.from_numpy(data.train_target_counts() > 0)
    model.fit(data)
    overall, among_new = [], []
    for start in range(0, len(cold), batch_size):
        batch = cold.take(slice(start, start + batch_size))
        scores = model.full_sort_predict(batch).float()
        target, history = torch.from_numpy(batch.target), torch.from_numpy(batch.history)
        overall.append(target_ranks(scores, target, history))
        among_new.append(target_ranks(scores.masked_fill(chosen, -torch.inf), target, history))
    ranks, new_ranks = torch.cat(overall).numpy(), torch.cat(among_new).numpy()
    return {
        "median rank (all items)": median_rank(ranks, data.n_items),
        "targets in the top 10": int(in_top_k(ranks, 10).sum()),
        "median rank among never-chosen items": median_rank(new_ranks, len(chosen) - int(chosen.sum())),
        "targets first among never-chosen items": int((new_ranks == 1).sum()),
        "targets in the top 3 among never-chosen items": int(in_top_k(new_ranks, 3).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="*", help="trained RUN/contrastive/best folders (labelled RUN)")
    parser.add_argument("--name", default="cold_start", help="results file stem under studies/results")
    args = parser.parse_args()
    settings = load_settings(progress=False)
    data = load_prepared(settings, DATASET)
    n_cold, n_never = int(data.test.cold.sum()), int((data.train_target_counts() == 0).sum())
    figures: dict[str, float] = {"cold test samples": n_cold, "never-chosen items": n_never}
    for checkpoint in [None, *args.checkpoints]:
        model, name = build_r2ec(settings, data, checkpoint)
        label = name if checkpoint is None else f"{name} {checkpoint.parent.parent.name}"
        for figure, value in rank_figures(model, data, settings.inference_batch_size).items():
            figures[f"{label}: {figure}"] = value
    weights_dtype = settings.dtype or "each checkpoint's own"
    notes = [
        f"Chance of a target being first among the {n_never} never-chosen items: {n_cold}/{n_never} = "
        f"{n_cold / n_never:.1f} of {n_cold} samples; median rank by chance ~{(n_never + 1) / 2:.0f} among them, "
        f"~{(data.n_items + 1) / 2:.0f} among all {data.n_items} items.",
        f"Weights dtype: {weights_dtype}; one run.",
    ]
    write_results(args.name, invocation("studies.cold_start"), figures, notes, RESULTS)


if __name__ == "__main__":
    main()
