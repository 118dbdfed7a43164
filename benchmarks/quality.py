"""Recommendation quality on ML-100k: popularity, SASRec and the three R²ec modes side by side.

Three phases, so that training and evaluation can run where each is affordable:

``.venv/bin/python -m benchmarks.quality train [--recipe smollm2-cpu] [--contrastive-minutes M]``
    trains the phases of a recipe (``r2ec.training.recipes``, the same that ``r2ec train --recipe`` runs):
    contrastive (w/o reasoning), then RecPO from the best contrastive adapter; the frozen lower layers of every
    item prompt are computed once and shared by both modes. Writes the
    checkpoints and ``budgets.json`` (samples, steps, rollouts, reasoning tokens, wall time, peak memory,
    device) under ``--runs`` (default ``var/bench/quality``), and the training curves as ``*/metrics.jsonl``.
    ``--init-adapter RUN/contrastive/best`` continues an earlier contrastive run (fresh optimizer and warm-up).

``.venv/bin/python -m benchmarks.quality evaluate --n-test 2000 [--models ...]``
    scores each model with ``r2ec evaluate``'s job on the same fixed, seeded subset of ``--n-test`` test samples
    (overall metrics) plus the whole cold-start slice (cold metrics) and merges one row per model into
    ``benchmarks/results/<--name>.{json,md}`` (rows of other models are kept, so models may be scored on
    different machines; each row records its command and device). A study's variant of the recipe is scored into
    its own file with ``--results studies/results --name <variant>`` (e.g. ``quality_cpu_u4``, ``*_ablation``).

``.venv/bin/python -m benchmarks.quality plot RUNS [RUNS ...]``
    draws validation NDCG@10 against training samples of every run into ``results/quality_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from r2ec.data.movielens import DatasetUnavailable
from r2ec.data.samples import PreparedData, held_out_items
from r2ec.modeling.backbone import resolve_dtype
from r2ec.modeling.recommender import FrozenLayerCache, R2ecRecommender
from r2ec.training.config import TrainConfig
from r2ec.training.logging import JsonlLogger
from r2ec.training.recipes import HEADLINE, get_recipe
from r2ec.training.trainer import R2ecTrainer, phase_model_config
from services.datastore import load_prepared
from services.jobs import evaluate, prepare_data
from services.jobs.resources import peak_rss_mb
from services.settings import Settings, load_settings

RESULTS = Path(__file__).parent / "results"
DATASET = "ml-100k"
BUDGETS = "budgets.json"
CHECKPOINTS = {"r2ec-contrastive": "contrastive", "r2ec-recpo": "recpo"}
PRIOR = "+popularity-prior"  # suffix of a row scored with the popularity prior (method.md §7), never the model alone
NEW_ITEM_SLOTS = 1  # places of the top 10 that a "+new-item-slots" row gives to new items
SLOT = "+new-item-slots"  # suffix of a row scored with that policy (r2ec/new_item_slots.py), never the model alone
MODELS = (
    "popularity",
    "sasrec",
    "content",
    "r2ec-zero-shot",
    *CHECKPOINTS,
    *(f"{m}{PRIOR}" for m in CHECKPOINTS),
    *(f"{m}{SLOT}" for m in ("popularity", *CHECKPOINTS)),
)


def device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} threads"


@dataclass(frozen=True)
class TrainingRun:
    """What the train phase varies around a recipe (``r2ec.training.recipes``): budgets, dtype, start, held-out items.

    With every field at its default, the phases are exactly the recipe's, as ``r2ec train --recipe`` builds them.
    """

    recipe: str = HEADLINE  # a named recipe or a recipe .json file
    contrastive_minutes: float | None = None  # None: the recipe's budget
    recpo_minutes: float | None = None
    contrastive_steps: int = 0  # > 0: the contrastive run also stops after this many steps (a step-matched control)
    recpo_steps: int = 0  # > 0: the RecPO run also stops after this many steps
    backbone: str = ""  # "": the recipe's backbone
    dtype: str = ""  # "": the recipe's dtype
    init_adapter: str = ""  # contrastive continues from this checkpoint's adapter (a run's best/), not a fresh LoRA
    hold_out_items: float = 0.0  # > 0: this share of training's items is hidden from training (studies/item_holdout.py)


def phase_config(run: TrainingRun, mode: str) -> TrainConfig:
    """The recipe's ``mode`` phase with this run's budget overrides."""
    minutes = {"contrastive": run.contrastive_minutes, "recpo": run.recpo_minutes}[mode]
    steps = {"contrastive": run.contrastive_steps, "recpo": run.recpo_steps}[mode]
    return get_recipe(run.recipe).with_budget(max_minutes=minutes, max_steps=steps or None).phase(mode)


def load_data(settings: Settings, hold_out_items: float = 0.0) -> PreparedData:
    """ML-100k (prepared on first use), with ``hold_out_items`` > 0 of training's items hidden from training."""
    try:
        data = load_prepared(settings, DATASET)
    except DatasetUnavailable:
        prepare_data.run(settings, "quality", DATASET)
        data = load_prepared(settings, DATASET)
    if hold_out_items:
        data = data.hold_out_items(held_out_items(data, hold_out_items, settings.seed))
    return data


def read_budgets(runs: Path) -> dict[str, Any]:
    """The training budgets a runs folder holds, per model (empty before its first training)."""
    return json.loads((runs / BUDGETS).read_text()) if (runs / BUDGETS).exists() else {}


def samples_behind(run: TrainingRun) -> int:
    """Training samples behind ``run.init_adapter``, read from its run's budgets (0 where they are not there)."""
    budgets = read_budgets(Path(run.init_adapter).parent.parent)
    if not budgets:
        return 0
    earlier = budgets["r2ec-contrastive"]
    return earlier["samples"] + earlier.get("init_samples", 0)


def train(settings: Settings, runs: Path, run: TrainingRun, modes: list[str]) -> dict[str, Any]:
    """Contrastive, then RecPO from the best contrastive adapter; returns (and writes) the budgets.

    ``modes`` may name only ``recpo`` to retrain RecPO from an earlier run's contrastive adapter.
    """
    data = load_data(settings, run.hold_out_items)
    recipe = get_recipe(run.recipe)
    changes = {key: value for key, value in (("backbone", run.backbone), ("dtype", run.dtype)) if value}
    recommender = R2ecRecommender.create(replace(recipe.model, **changes), settings.root / "cache")
    items = FrozenLayerCache(recommender, recommender.item_prompt_ids(data.items))
    budgets = read_budgets(runs)
    for mode in modes:
        model, config = f"r2ec-{mode}", phase_config(run, mode)
        started = time.perf_counter()
        out = runs / CHECKPOINTS[model]
        init, init_samples = "fresh LoRA", 0
        if config.mode == "recpo":
            recommender.load_adapter_weights(runs / CHECKPOINTS["r2ec-contrastive"] / "best")
            init = "best r2ec-contrastive adapter"
        elif run.init_adapter:
            recommender.load_adapter_weights(Path(run.init_adapter))
            init = f"adapter of {run.init_adapter} (fresh optimizer and warm-up)"
            init_samples = samples_behind(run)
        recommender.config = phase_model_config(recommender.config, config)
        logger = JsonlLogger(out / "metrics.jsonl")
        trainer = R2ecTrainer(recommender, data, config, logger, settings.show_progress, items)
        result = trainer.train(out)
        budgets[model] = {
            **result.budget,
            "max_minutes": config.max_minutes,
            "best_valid_ndcg@10": result.best_valid_ndcg10,
            "init": init,
            "init_samples": init_samples,
            "train_wall_s": round(time.perf_counter() - started, 1),
            "train_peak_rss_mb": round(peak_rss_mb(), 1),
            "train_device": device_name(),
            "train_dtype": f"{str(resolve_dtype(recommender.config.dtype)).removeprefix('torch.')} weights, "
            "float32 LoRA",
            "train_config": asdict(config),
            "recipe": {**asdict(run), "label": recipe.label},
        }
        print(f"{model}: best valid NDCG@10 {result.best_valid_ndcg10:.4f} after {result.budget}", flush=True)
        (runs / BUDGETS).write_text(json.dumps(budgets, indent=2) + "\n")
    return budgets


def evaluate_models(settings: Settings, runs: Path, models: list[str], n_test: int, command: str) -> list[dict]:
    """One row per model: ``r2ec evaluate --json`` fields + training budget, wall time and peak memory."""
    budgets = read_budgets(runs)
    rows = []
    for model in models:
        started = time.perf_counter()
        base = model.removesuffix(PRIOR).removesuffix(SLOT)
        slots = NEW_ITEM_SLOTS if model.endswith(SLOT) else 0
        policies = {"popularity_prior": model.endswith(PRIOR), "new_item_slots": slots}
        if base in CHECKPOINTS:
            checkpoint = runs / CHECKPOINTS[base] / "best"
            if base not in budgets:
                raise SystemExit(f"{base}: no budget in {runs / BUDGETS}; run the train phase first")
            report = evaluate.run(
                settings, "quality", "r2ec", DATASET, checkpoint=checkpoint, max_samples=n_test, **policies
            )
            policy = {k: v for k, v in report["budget"].items() if k.startswith(("prior_", "new_item", "slots_"))}
            budget = {**budgets[base], **policy}
        else:
            name = "r2ec" if base == "r2ec-zero-shot" else base
            report = evaluate.run(settings, "quality", name, DATASET, max_samples=n_test, **policies)
            budget = report["budget"]
        assert report["model"] == model, (report["model"], model)
        eval_wall = round(time.perf_counter() - started, 1)
        rows.append(
            {
                **report,
                "budget": budget,
                "eval_wall_s": eval_wall,
                "wall_s": round(eval_wall + budget.get("train_wall_s", 0.0), 1),
                "peak_rss_mb": max(report["peak_rss_mb"], budget.get("train_peak_rss_mb", 0.0)),
                "eval_device": device_name(),
                "command": command,
            }
        )
        print(f"{model}: test NDCG@10 {report['test']['ndcg@10']:.4f}, cold {report['test_cold']['ndcg@10']:.4f}")
    return rows


def write_results(name: str, rows: list[dict], results: Path = RESULTS) -> None:
    """Merge ``rows`` into ``<results>/<name>.json`` (one row per model) and rewrite the markdown table."""
    path = results / f"{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {"meta": {}, "results": []}
    by_model = {row["model"]: row for row in old["results"]} | {row["model"]: row for row in rows}
    ordered = [by_model[m] for m in MODELS if m in by_model]
    subset = ordered[0]["subset"]
    meta = {
        **old["meta"],  # hand-written notes (how the runs were made) are kept
        "dataset": DATASET,
        "subset": f"{subset}: overall metrics on the seeded subset, cold metrics on the whole cold-start slice; "
        "every model scored on the same rows",
    }
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": ordered}, indent=2, default=str) + "\n")
    lines = [
        f"# Quality on ML-100k ({name})\n",
        f"Overall: {subset}; every model on the same rows. Each row's `command` in `{name}.json` produced it.\n",
        *[f"- {note}" for note in meta.get("notes", [])],
        "",
        "| model | NDCG@10 | HR@10 | NDCG@20 | cold NDCG@10 | cold HR@10 | samples trained | steps | rollouts "
        "| reasoning tokens | train s | eval s | peak RSS MB | train device | eval device |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ordered:
        t, c, b = r["test"], r["test_cold"], r["budget"]
        lines.append(
            f"| {r['model']} | {t['ndcg@10']:.4f} | {t['hr@10']:.4f} | {t['ndcg@20']:.4f} | {c['ndcg@10']:.4f} | "
            f"{c['hr@10']:.4f} | {b.get('samples', b.get('samples_seen', 0))} | "
            f"{b.get('steps', b.get('epochs', 0))} | {b.get('rollouts', '')} | {b.get('reasoning_tokens', '')} | "
            f"{b.get('train_wall_s', b.get('train_s', ''))} | {r['eval_wall_s']} | {r['peak_rss_mb']} | "
            f"{b.get('train_device', '')} | {r['eval_device']} |"
        )
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")


def plot_curves(runs: list[Path], out: Path) -> None:
    """Per run and mode, against training samples: validation NDCG@10, and the item loss over its chance level.

    The chance level is the loss of equal, user-blind scores (ln(#candidates) without the logQ correction). A
    falling excess is a run that learns; its level alone decides little: the run that learns planted preferences
    (``studies/results/learnability.md``) still sits ~0.15 above chance after 57 steps, paying for its score spread.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (valid_axes, loss_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        budgets = read_budgets(run)
        for model, folder in CHECKPOINTS.items():
            if not (run / folder / "metrics.jsonl").exists():
                continue
            records = [json.loads(line) for line in (run / folder / "metrics.jsonl").read_text().splitlines()]
            batch, before = budgets[model]["train_config"]["batch_size"], budgets[model].get("init_samples", 0)
            label = f"{model} ({budgets[model]['train_device'].split(':')[0]}, {run.name})"
            points = [(before + r["step"] * batch, r["valid_ndcg@10"]) for r in records if "valid_ndcg@10" in r]
            (line,) = valid_axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
            steps = [r for r in records if "item_loss" in r and "chance_loss" in r]
            if len(steps) >= 15:
                excess = np.convolve([r["item_loss"] - r["chance_loss"] for r in steps], np.ones(15) / 15, "valid")
                samples = [before + r["step"] * batch for r in steps[14:]]
                loss_axes.plot(samples, excess, color=line.get_color(), label=label)
    valid_axes.set_xlabel("training samples (users) seen, a continued run's earlier ones too")
    valid_axes.set_ylabel("validation NDCG@10 (seeded subset)")
    valid_axes.set_title("R²ec on ML-100k: validation during training")
    valid_axes.legend(fontsize=6)
    loss_axes.axhline(0, color="grey", linewidth=0.8)
    loss_axes.set_xlabel("training samples (users) seen, a continued run's earlier ones too")
    loss_axes.set_ylabel("item loss - chance loss, 15-step mean")
    loss_axes.set_title("item loss over chance: falling = learning")
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=None, help="checkpoints and budgets (default var/bench/quality)")
    phases = parser.add_subparsers(dest="phase", required=True)
    train_phase = phases.add_parser("train")
    train_phase.add_argument("--modes", default="contrastive,recpo", help="recpo alone reuses the contrastive run")
    for field_ in fields(TrainingRun):
        flag, default = "--" + field_.name.replace("_", "-"), field_.default
        kind = float if field_.name.endswith("_minutes") else type(default)
        train_phase.add_argument(flag, type=kind, default=default, help=f"(default {default})")
    evaluate_phase = phases.add_parser("evaluate")
    evaluate_phase.add_argument("--n-test", type=int, default=2000)
    evaluate_phase.add_argument("--models", default=",".join(MODELS))
    evaluate_phase.add_argument("--name", default="quality", help="results file stem under --results")
    evaluate_phase.add_argument(
        "--results", type=Path, default=RESULTS, help="folder of the results file (a study's variant: studies/results)"
    )
    plot_phase = phases.add_parser("plot")
    plot_phase.add_argument("run_dirs", type=Path, nargs="+", help="runs folders of the train phase")
    plot_phase.add_argument("--out", type=Path, default=RESULTS / "quality_curves.png")
    args = parser.parse_args()
    if args.phase == "plot":
        plot_curves(args.run_dirs, args.out)
        return
    settings = load_settings(progress=True)
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on a GPU (fp32 runs); no effect on a CPU
    runs = args.runs or settings.root / "bench" / "quality"
    torch.manual_seed(settings.seed)
    if args.phase == "train":
        modes = [m for m in args.modes.split(",") if m]
        if not set(modes) <= {"contrastive", "recpo"}:
            raise SystemExit(f"--modes takes contrastive and/or recpo, not {args.modes!r}")
        train(settings, runs, TrainingRun(**{f.name: getattr(args, f.name) for f in fields(TrainingRun)}), modes)
        return
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    runs_flag = f"--runs {args.runs} " if args.runs else ""
    command = (
        f".venv/bin/python -m benchmarks.quality {runs_flag}evaluate --n-test {args.n_test} "
        f"--models {','.join(models)} --name {args.name}"
    )
    if args.results.resolve() != RESULTS.resolve():
        command += f" --results {args.results}"
    write_results(args.name, evaluate_models(settings, runs, models, args.n_test, command), args.results)


if __name__ == "__main__":
    main()
