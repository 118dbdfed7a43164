"""Does the text item tower rank items that no model was trained on, when they are not all brand-new releases?

ML-100k's cold-start test slice is mostly April 1998's new releases (``cold_ceiling.md``): it measures freshness
more than the item tower. Here a seeded random share of the items that training chose is hidden from training
altogether (``PreparedData.hold_out_items``: no training sample targets them, no training history shows them);
every model is trained without them and scored on the test samples whose target is one of them, beside the seeded
test subset and the new-release slice (test targets that nobody chose in the full training split).

    .venv/bin/python -m benchmarks.quality --runs var/bench/holdout train --hold-out-items 0.05 ...
    .venv/bin/python -m benchmarks.quality --runs var/bench/control train --contrastive-steps S --recpo-steps R ...
    .venv/bin/python -m studies.item_holdout var/bench/holdout [--n-test 1000] [--models ...] \
        [--control var/bench/control] [--seen-checkpoint RUN/contrastive/best]

writes ``studies/results/<--name>.{json,md,png}`` (default ``item_holdout``). ``--control`` adds the checkpoints of a
run with the same recipe on the full training split (the held-out items included), stopped after the holdout run's
steps: what the slices give when the only difference is having seen the items. ``--seen-checkpoint`` adds any
other checkpoint trained with them. The run's ``budgets.json`` says which share was held out; the same seed
(``R2EC_SEED``) picks the same items.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality import BUDGETS, CHECKPOINTS, device_name, load_data, read_budgets
from benchmarks.report import invocation, write_results
from r2ec.baselines.sasrec import SASRec, SASRecConfig
from r2ec.data.samples import PreparedData, Samples, held_out_items, with_cold_flags
from r2ec.evaluation.evaluator import evaluation_subset, sample_ranks
from r2ec.evaluation.metrics import in_top_k, median_rank, ranking_metrics
from r2ec.modeling.backbone import resolve_dtype
from r2ec.recommender import Recommender
from services.jobs.evaluate import build_baseline, build_r2ec
from services.settings import Settings, load_settings
from studies import RESULTS

MODELS = ("popularity", "sasrec", "content", "r2ec-zero-shot", *CHECKPOINTS)
CONTROLS = {f"{m} (control, saw them)": m for m in CHECKPOINTS}  # --control: same recipe and steps, all items
SEEN = "r2ec-contrastive (other run, saw them)"  # --seen-checkpoint: any checkpoint trained with the items
# Recipe fields a control may differ in: the held-out share and the limits that stop its runs
NOT_COMPARED = {"hold_out_items", "contrastive_minutes", "recpo_minutes", "contrastive_steps", "recpo_steps"}


def build(
    settings: Settings, data: PreparedData, args: argparse.Namespace, model: str, checkpoints: dict[str, Path]
) -> Recommender:
    if model in checkpoints:
        return build_r2ec(settings, data, checkpoints[model])[0]
    if model == "r2ec-zero-shot":
        return build_r2ec(settings, data, None)[0]
    if model == "sasrec":
        return SASRec(SASRecConfig(seed=settings.seed, max_epochs=args.sasrec_epochs))
    return build_baseline(model, settings.seed)


def recipe_differences(holdout: dict[str, Any], control: dict[str, Any]) -> dict[str, Any]:
    """Where the control's training differs from the holdout run's, other than the held-out items and the limits
    that stop it (a step-matched control: none)."""
    differences = {}
    for model, budget in holdout.items():
        if model not in control:
            differences[model] = "not trained"
            continue
        ours, theirs = budget["recipe"], control[model]["recipe"]
        changed = {k: (v, theirs.get(k)) for k, v in ours.items() if k not in NOT_COMPARED and theirs.get(k) != v}
        if budget["steps"] != control[model]["steps"]:
            changed["steps"] = (budget["steps"], control[model]["steps"])
        if changed:
            differences[model] = changed
    return differences


def chance_hits(samples: Samples, n_items: int, k: int = 10) -> float:
    """Expected targets in a top ``k`` drawn uniformly from the items outside each sample's history."""
    return float(np.sum(k / (n_items - samples.history_len)))


def slice_figures(label: str, ranks: np.ndarray, n_items: int) -> dict[str, Any]:
    return {
        f"{label}: NDCG@10": round(ranking_metrics(ranks)["ndcg@10"], 4),
        f"{label}: targets in the top 10": int(in_top_k(ranks, 10).sum()),
        f"{label}: median rank": median_rank(ranks, n_items),
    }


def plot(figures: dict[str, Any], models: list[str], out: Path) -> None:
    """Targets in the top 10 per model and slice, against a uniform pick's expectation on the held-out slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = ("held-out items", "new releases")
    figure, axes = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(slices)
    for i, label in enumerate(slices):
        hits = [figures[f"{m} / {label}: targets in the top 10"] for m in models]
        axes.bar(np.arange(len(models)) + i * width, hits, width, label=f"{label} ({figures[f'{label}: samples']})")
    chance = figures["held-out items: uniform pick, expected hits"]
    axes.axhline(chance, color="grey", linestyle="--", linewidth=1)
    axes.text(-0.4, chance, "a uniform pick on the held-out slice", va="bottom", fontsize=8, color="grey")
    axes.set_xticks(np.arange(len(models)) + width / 2, models, fontsize=7, rotation=15, ha="right")
    axes.set_ylabel("test targets in the top 10")
    axes.set_title("ML-100k: items hidden from training vs new releases")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="the runs folder of `benchmarks.quality train --hold-out-items F`")
    parser.add_argument("--n-test", type=int, default=1000, help="seeded test samples for the overall figures")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--sasrec-epochs", type=int, default=SASRecConfig.max_epochs, help="a cap on SASRec's training on a CPU"
    )
    parser.add_argument(
        "--control",
        type=Path,
        help="also score the checkpoints of this runs folder: the same recipe and steps on the full training split",
    )
    parser.add_argument(
        "--seen-checkpoint",
        type=Path,
        help="also score a contrastive checkpoint trained on the full training split, held-out items included",
    )
    parser.add_argument("--name", default="item_holdout", help="results file stem under studies/results")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    if unknown := set(models) - set(MODELS):
        raise SystemExit(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    budgets = read_budgets(args.runs)
    trained = [m for m in models if m in CHECKPOINTS]
    if missing := [m for m in trained if m not in budgets]:
        raise SystemExit(f"{missing}: no budget in {args.runs / BUDGETS}; run `benchmarks.quality train` first")
    # every trained row: its checkpoint and its training budget
    checkpoints = {m: args.runs / CHECKPOINTS[m] / "best" for m in trained}
    row_budgets = {m: budgets[m] for m in trained}
    if args.control:
        control_budgets = read_budgets(args.control)
        if differences := recipe_differences(row_budgets, control_budgets):
            raise SystemExit(f"{args.control} is no control of {args.runs}: (holdout, control) {differences}")
        controls = {c: m for c, m in CONTROLS.items() if m in trained}
        checkpoints |= {c: args.control / CHECKPOINTS[m] / "best" for c, m in controls.items()}
        row_budgets |= {c: control_budgets[m] for c, m in controls.items()}
        models += list(controls)
    if args.seen_checkpoint:
        checkpoints[SEEN] = args.seen_checkpoint
        models.append(SEEN)
    shares = {budget["recipe"].get("hold_out_items", 0.0) for budget in budgets.values()}
    if len(shares) != 1 or not 0 < (share := shares.pop()) < 1:
        raise SystemExit(f"{args.runs}: its runs must hold out one share of items (`train --hold-out-items F`)")

    settings = load_settings(progress=True)
    full = load_data(settings)
    held = held_out_items(full, share, settings.seed)
    data = full.hold_out_items(held)
    samples, overall = evaluation_subset(data.test, args.n_test, settings.seed)
    on_held = np.isin(samples.target, held)
    new_releases = with_cold_flags(samples, full.train).cold  # quality.md's cold slice
    figures: dict[str, Any] = {
        "held-out items (share of training's distinct targets)": f"{len(held)} ({share:.0%})",
        "training samples without / with them": f"{len(data.train)} / {len(full.train)}",
        "held-out items: samples": int(on_held.sum()),
        "held-out items: distinct targets": len(np.unique(samples.target[on_held])),
        "held-out items: uniform pick, expected hits": round(chance_hits(samples.take(on_held), data.n_items), 2),
        "new releases: samples": int(new_releases.sum()),
        "seeded test samples": int(overall.sum()),
    }
    fits: dict[str, Any] = {}
    for model in models:
        recommender = build(settings, data, args, model, checkpoints)
        fits[model] = recommender.fit(data, progress=settings.show_progress)
        ranks = sample_ranks(recommender, samples, settings.inference_batch_size, settings.show_progress)
        figures |= slice_figures(f"{model} / test (seeded)", ranks[overall], data.n_items)
        figures |= slice_figures(f"{model} / held-out items", ranks[on_held], data.n_items)
        figures |= slice_figures(f"{model} / new releases", ranks[new_releases], data.n_items)
        print(f"{model}: held-out hits {figures[f'{model} / held-out items: targets in the top 10']}", flush=True)

    kept = ("samples", "steps", "train_wall_s", "train_device")
    runs_trained = {m: {k: budget[k] for k in kept} for m, budget in row_budgets.items()}
    notes = [
        f"Training of the checkpoints: {json.dumps(runs_trained)}; popularity, SASRec and the content model are fitted "
        "here on the same training split, without the held-out items. What each fit reports (SASRec capped at "
        f"--sasrec-epochs): {json.dumps(fits, default=str)}.",
        "Slices: 'held-out items' = test samples whose target is a held-out item (all of them in the scored rows); "
        "'new releases' = the other cold samples (targets nobody chose in the full training split, quality.md's "
        "cold slice); 'test (seeded)' = the seeded subset, on which quality.md's overall figures are computed.",
        *(
            [
                f"The '(control, saw them)' rows are {args.control}: the same recipe on the full training split "
                "(the held-out items included), stopped after the same number of steps; the only difference is the "
                "items. Its validation and batches draw from that split, so its samples differ, not their number."
            ]
            if args.control
            else []
        ),
        *(
            [
                f"'{SEEN}' is {args.seen_checkpoint}, trained on the full training split (the held-out items "
                "included) with its own recipe and budget: what the slices give a model that saw the items, not an "
                "equal-budget control."
            ]
            if args.seen_checkpoint
            else []
        ),
        f"Scored on {device_name()}, weights {str(resolve_dtype(settings.dtype or 'auto')).removeprefix('torch.')}; "
        "one run. A target in the history ranks last in the median.",
    ]
    write_results(args.name, invocation("studies.item_holdout"), figures, notes, RESULTS)
    plot(figures, models, RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
