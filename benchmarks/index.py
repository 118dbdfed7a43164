"""Item index figures: ``.venv/bin/python -m benchmarks.index``.

1. Encode + upsert of the ML-100k catalogue with the default model (SmolLM2-135M-Instruct, untrained LoRA, the
   training job's CPU defaults), into Qdrant local mode in memory and on disk (``path=``), through
   ``services.vectors.publish`` (batches, verification, alias switch included).
2. Top-K latency per user, history excluded, Qdrant local mode vs exact numpy search on the same unit vectors,
   for the real catalogue size (1,682) and 100k synthetic items (d = 576, the model's width). Single-user
   queries (p50/p95) and a batch of users in one call (amortised per user). Both must return the same ids.

No Qdrant server can run on this machine (environment.md): server-side figures are not measured here.
Writes ``benchmarks/results/index.json`` and ``benchmarks/results/index.md``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from qdrant_client import QdrantClient

from services import vectors
from services.settings import load_settings

RESULTS = Path(__file__).parent / "results"
COMMAND = "flock /tmp/r2ec-cpu.lock .venv/bin/python -m benchmarks.index"
DIM, K, HISTORY, USERS, BATCH = 576, 10, 20, 100, 25


def encode_and_upsert() -> dict[str, Any]:
    """Seconds to encode the ML-100k catalogue and to publish it (memory and disk), and items/s."""
    from r2ec.data.datasets import load_dataset
    from r2ec.modeling.recommender import R2ecRecommender
    from r2ec.training.recipes import CPU_MODEL

    settings = load_settings()
    _, items = load_dataset("ml-100k")
    started = time.perf_counter()
    model = R2ecRecommender.create(CPU_MODEL, settings.root / "cache")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    table = model.encode_items(items)
    encode_s = time.perf_counter() - started
    version = vectors.IndexVersion("bench", model.template_version, vectors.catalogue_digest(items), len(items))
    upsert = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, client in (("memory", QdrantClient(location=":memory:")), ("disk", QdrantClient(path=tmp))):
            started = time.perf_counter()
            vectors.publish(client, table, items, version, batch_size=settings.index_batch_size)
            upsert[mode] = time.perf_counter() - started
            client.close()
    n = len(items)
    return {
        "items": n,
        "dim": int(table.shape[1]),
        "dtype": str(next(model.model.parameters()).dtype),
        "model_load_s": round(load_s, 1),
        "encode_s": round(encode_s, 1),
        "encode_items_per_s": round(n / encode_s, 1),
        "upsert_s": {mode: round(s, 2) for mode, s in upsert.items()},
        "encode_plus_upsert_items_per_s": {mode: round(n / (encode_s + s), 1) for mode, s in upsert.items()},
    }


def numpy_top_k(table: np.ndarray, users: np.ndarray, history: np.ndarray, k: int) -> np.ndarray:
    """Exact search: all scores, history set to -inf, top k sorted."""
    scores = users @ table.T
    np.put_along_axis(scores, history, -np.inf, axis=1)
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def query_latency(n_items: int, seed: int = 0) -> dict[str, Any]:
    """Per-user latency of Qdrant (local, in memory) and numpy on ``n_items`` random unit vectors."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n_items, DIM)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    users = rng.standard_normal((USERS, DIM)).astype(np.float32)
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    history = np.stack([rng.choice(n_items, HISTORY, replace=False) for _ in range(USERS)])
    items = pd.DataFrame({"item_id": np.arange(n_items).astype(str), "title": np.arange(n_items).astype(str)})
    client = QdrantClient(location=":memory:")
    version = vectors.IndexVersion("synthetic", "none", vectors.catalogue_digest(items), n_items)
    started = time.perf_counter()
    collection = vectors.publish(client, table, items, version, batch_size=256)["collection"]
    build_s = time.perf_counter() - started

    def single(search) -> tuple[list[float], np.ndarray]:
        times, ids = [], []
        for row in range(USERS):
            started = time.perf_counter()
            ids.append(search(users[row : row + 1], history[row : row + 1]))
            times.append(time.perf_counter() - started)
        return times, np.concatenate(ids)

    def batched(search) -> float:
        started = time.perf_counter()
        for start in range(0, USERS, BATCH):
            search(users[start : start + BATCH], history[start : start + BATCH])
        return (time.perf_counter() - started) / USERS

    engines = {
        "qdrant_local": lambda u, h: vectors.top_k(client, collection, u, h, K, exact=False)[0],
        "numpy_exact": lambda u, h: numpy_top_k(table, u, h, K),
    }
    result: dict[str, Any] = {"items": n_items, "dim": DIM, "qdrant_build_s": round(build_s, 2)}
    answers = {}
    for name, search in engines.items():
        times, answers[name] = single(search)
        result[name] = {
            "p50_ms": round(1000 * float(np.percentile(times, 50)), 3),
            "p95_ms": round(1000 * float(np.percentile(times, 95)), 3),
            f"batch{BATCH}_ms_per_user": round(1000 * batched(search), 3),
        }
    result["same_ids"] = bool(np.array_equal(answers["qdrant_local"], answers["numpy_exact"]))
    client.close()
    return result


def markdown(results: dict[str, Any]) -> str:
    enc = results["encode_upsert"]
    lines = [
        "# Item index: encode + upsert, and top-K query latency",
        "",
        f"Produced by `{COMMAND}` (`benchmarks/index.py`) on {results['machine']}.",
        "Timing noise between identical runs on this shared 2-core machine is large (environment.md): compare",
        "rows of one run as ratios. No Qdrant server runs here; all Qdrant figures are local mode.",
        "",
        f"## Encode + upsert of the ML-100k catalogue ({enc['items']} items, d={enc['dim']}, {enc['dtype']})",
        "",
        "| step | seconds | items/s |",
        "|---|---|---|",
        f"| encode (SmolLM2-135M, untrained LoRA) | {enc['encode_s']} | {enc['encode_items_per_s']} |",
    ]
    for mode in ("memory", "disk"):
        lines.append(
            f"| publish to Qdrant local {mode} (upsert + verify + alias) | {enc['upsert_s'][mode]} "
            f"| {round(enc['items'] / enc['upsert_s'][mode], 1)} |"
        )
        lines.append(f"| encode + publish ({mode}) | | {enc['encode_plus_upsert_items_per_s'][mode]} |")
    lines += [
        "",
        f"## Top-{K} per user, {HISTORY} history items excluded, d={DIM} (random unit vectors, {USERS} users)",
        "",
        f"| items | engine | p50 ms/user | p95 ms/user | batch of {BATCH}: ms/user | same ids as numpy |",
        "|---|---|---|---|---|---|",
    ]
    for block in results["latency"]:
        for engine in ("qdrant_local", "numpy_exact"):
            row = block[engine]
            lines.append(
                f"| {block['items']:,} | {engine} | {row['p50_ms']} | {row['p95_ms']} "
                f"| {row[f'batch{BATCH}_ms_per_user']} | {block['same_ids']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    results = {
        "command": COMMAND,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "encode_upsert": encode_and_upsert(),
        "latency": [query_latency(1682), query_latency(100_000)],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "index.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
