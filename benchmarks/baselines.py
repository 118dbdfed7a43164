"""Popularity vs SASRec on the ML-100k test split: ``make bench-baselines``.

Each model runs ``r2ec evaluate --json`` in its own process, so ``peak_rss_mb`` (from ``wait4``) is that
model's alone and ``wall_s`` covers the whole command (interpreter start, data preparation, training,
evaluation). Writes ``benchmarks/results/baselines.json`` (one object per model: the ``r2ec evaluate --json``
shape with those two figures measured from outside) and ``benchmarks/results/baselines.md``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
COMMAND = "make bench-baselines"
MODELS = ("popularity", "sasrec")
DATASET = "ml-100k"
# reference figures on this split from independent implementations (issue 2)
REFERENCE = {"popularity": (0.0200, 0.0397), "sasrec": (0.085, 0.170)}


def r2ec(*args: str) -> list[str]:
    """The ``r2ec`` console command of this interpreter's environment."""
    return [sys.executable, "-m", "services.cli", *args]


def run_model(model: str, workdir: Path) -> dict[str, Any]:
    """``r2ec evaluate --json`` for one model in a child process; its JSON plus wall time and peak RSS."""
    out = workdir / f"{model}.json"
    started = time.perf_counter()
    child = subprocess.Popen(r2ec("evaluate", "--model", model, "--dataset", DATASET, "--json", str(out)))
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"r2ec evaluate --model {model} failed with status {os.waitstatus_to_exitcode(status)}")
    result = json.loads(out.read_text())
    return {**result, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def markdown(results: list[dict[str, Any]]) -> str:
    """A short table of test and cold-start metrics, the command, and SASRec's margin over popularity."""
    by_model = {r["model"]: r for r in results}
    lines = [
        f"# Baselines on {DATASET} (test split, full ranking, history masked)",
        "",
        f"Produced by `{COMMAND}` (`benchmarks/baselines.py`) on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads.",
        "",
        "| model | test NDCG@10 | test HR@10 | test NDCG@20 | test HR@20 | cold NDCG@10 | cold HR@10 "
        "| reference NDCG@10 / HR@10 | wall s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        test, cold = r["test"], r["test_cold"]
        ref = REFERENCE.get(r["model"])
        lines.append(
            f"| {r['model']} | {test['ndcg@10']:.4f} | {test['hr@10']:.4f} | {test['ndcg@20']:.4f} "
            f"| {test['hr@20']:.4f} | {cold['ndcg@10']:.4f} | {cold['hr@10']:.4f} "
            f"| {f'{ref[0]:.4f} / {ref[1]:.4f}' if ref else '-'} | {r['wall_s']} | {r['peak_rss_mb']} |"
        )
    test_n, cold_n = results[0]["test"]["n"], results[0]["test_cold"]["n"]
    lines += ["", f"Test samples: {test_n}; cold-start slice: {cold_n}."]
    if {"popularity", "sasrec"} <= by_model.keys():
        pop, sas = by_model["popularity"]["test"], by_model["sasrec"]["test"]
        lines.append(
            f"SASRec beats popularity on the test split: NDCG@10 {sas['ndcg@10']:.4f} vs {pop['ndcg@10']:.4f} "
            f"({sas['ndcg@10'] / pop['ndcg@10']:.1f}x, +{sas['ndcg@10'] - pop['ndcg@10']:.4f}), "
            f"HR@10 {sas['hr@10']:.4f} vs {pop['hr@10']:.4f} ({sas['hr@10'] / pop['hr@10']:.1f}x)."
        )
        lines.append(f"SASRec training budget: {json.dumps(by_model['sasrec'].get('budget', {}))}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    subprocess.run(r2ec("data", "prepare", "--dataset", DATASET), check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_model(model, Path(tmp)) for model in MODELS]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "baselines.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "baselines.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
