"""User vectors after reasoning: a second forward over prompt + reasoning against one step on the KV cache.

Run: ``.venv/bin/python -m benchmarks.user_vectors [--users 32] [--rounds 2]`` (writes
benchmarks/results/user_vectors.{json,md}).

The untrained model with the CPU defaults of training (SmolLM2-135M, compact prompts, greedy reasoning of up to 32
tokens) encodes the same seeded test users both ways, in alternating order (A B, then B A, ...) after one warm-up
of each, so both see the same machine state; greedy decoding gives both the same tokens, so their vectors must
agree up to the dtype's rounding. Reported: seconds per user of each path, their ratio, and the largest
difference between the two paths' vectors.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from benchmarks.quality import RESULTS, device_name, load_data
from r2ec.modeling.backbone import EMBEDDED_BACKBONE, resolve_dtype
from r2ec.modeling.generation import generate_rollouts
from r2ec.modeling.recommender import R2ecRecommender
from r2ec.modeling.scoring import project
from r2ec.training.recipes import CPU_MODEL
from services.settings import load_settings


def encode(recommender: R2ecRecommender, prompts: list[list[int]], on_cache: bool) -> tuple[torch.Tensor, float]:
    """(N, d) raw user vectors and the wall seconds it took, by one path."""
    started = time.perf_counter()
    settings = recommender.config.generation
    rollouts = generate_rollouts(recommender.model, recommender.tokenizer, prompts, settings, read_vectors=on_cache)
    if on_cache:
        vectors = rollouts.vectors
    else:
        rows = [ids[m.bool()].tolist() for ids, m in zip(rollouts.input_ids, rollouts.attention_mask, strict=True)]
        vectors = recommender.raw_vectors(rows, batch_size=settings.batch_size)
    return vectors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="timed A/B pairs after the warm-up, order alternating")
    parser.add_argument("--backbone", default=EMBEDDED_BACKBONE, help="'tiny' smoke-tests the script")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    settings = load_settings(progress=False)
    data = load_data(settings)
    recommender = R2ecRecommender.create(
        replace(CPU_MODEL, reasoning=True, backbone=args.backbone), settings.root / "cache"
    )
    chosen = np.sort(np.random.default_rng(settings.seed).choice(len(data.test), args.users, replace=False))
    prompts = recommender.user_prompt_ids(data.test.take(chosen), data.items)
    seconds: dict[str, list[float]] = {"second forward": [], "KV-cache step": []}
    for on_cache in (False, True):  # warm-up, not timed
        encode(recommender, prompts, on_cache)
    for round_ in range(args.rounds):
        for on_cache in (False, True) if round_ % 2 == 0 else (True, False):
            vectors, wall = encode(recommender, prompts, on_cache)
            seconds["KV-cache step" if on_cache else "second forward"].append(wall)
            if on_cache:
                from_cache = vectors
            else:
                two_pass = vectors
    per_user = {path: min(walls) / args.users for path, walls in seconds.items()}
    cosine = (project(from_cache, None) * project(two_pass, None)).sum(dim=1)
    result = {
        "command": f".venv/bin/python -m benchmarks.user_vectors --users {args.users} --rounds {args.rounds}",
        "device": device_name(),
        "dtype": str(resolve_dtype(recommender.config.dtype)).removeprefix("torch."),
        "users": args.users,
        "max_new_tokens": recommender.config.generation.max_new_tokens,
        "seconds_per_user": {path: round(s, 4) for path, s in per_user.items()},
        "all_walls_s": {path: [round(w, 2) for w in walls] for path, walls in seconds.items()},
        "speed-up": round(per_user["second forward"] / per_user["KV-cache step"], 3),
        "max_abs_difference": float((from_cache - two_pass).abs().max()),
        "largest_abs_component": float(two_pass.abs().max()),  # LM states have a few very large dimensions
        "min_cosine_between_paths": float(cosine.min()),
    }
    print(json.dumps(result, indent=2))
    if args.backbone != EMBEDDED_BACKBONE:
        return
    (RESULTS / "user_vectors.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "user_vectors.md").write_text(
        "# User vectors after reasoning: second forward vs one KV-cache step\n\n"
        f"`{result['command']}` on {result['device']}, {result['dtype']}, {args.users} seeded ML-100k test users, "
        f"greedy reasoning of up to {result['max_new_tokens']} tokens, best of {args.rounds} alternating rounds.\n\n"
        "| path | s per user (generation + vector) |\n|---|---|\n"
        + "".join(f"| {path} | {s:.4f} |\n" for path, s in per_user.items())
        + f"\nSpeed-up {result['speed-up']}x; the two paths' raw vectors differ by at most "
        f"{result['max_abs_difference']:.2e} in a component, where the largest component is "
        f"{result['largest_abs_component']:.1f} (bf16 rounding of different kernel shapes); min cosine between "
        f"the paths {result['min_cosine_between_paths']:.6f}.\n"
    )


if __name__ == "__main__":
    main()
