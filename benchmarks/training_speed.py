"""Training-step speed of R²ec on this CPU: each lever against the straightforward step, in one run.

Run: ``.venv/bin/python -m benchmarks.training_speed`` (writes benchmarks/results/training_speed.{json,md}).
Every variant trains the real SmolLM2-135M on ML-100k train batches; we time ``loss + backward + AdamW step``
(median of the timed steps after one warm-up step) and report samples/s and the ratio to the first variant.
Item negatives come from a random item table: the cost of a step does not depend on its values.
Contrastive variants use 4 users per step: the straightforward variant (~400-token prompts, fp32, activations
of all 30 layers kept for backward, 64 item negatives with gradient) was killed for memory on this 24 GB machine
at 16 users, and at 8 in two runs of 2026-11-26 (24 GB peak; an earlier run at 8 had fit); the last contrastive
variants show the quality benchmark's 16. Run it alone on the machine: every variant shares the cores.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from r2ec.data.samples import PAD
from r2ec.modeling.backbone import LoraSettings, cpu_has_fast_bf16, resolve_dtype
from r2ec.modeling.prompts import PromptSettings
from r2ec.modeling.recommender import R2ecConfig, R2ecRecommender
from r2ec.training.config import TrainConfig
from r2ec.training.trainer import R2ecTrainer
from services.datastore import load_prepared
from services.jobs import prepare_data
from services.settings import load_settings

RESULTS = Path(__file__).parent / "results"
FULL_PROMPT = PromptSettings(history_items=20, show_time=True, show_rating=True)
COMPACT_PROMPT = PromptSettings(history_items=10, show_time=False, show_rating=True)
BASE = R2ecConfig(reasoning=False, dtype="float32", lora=LoraSettings(top_layers=None), prompts=FULL_PROMPT)
TOP4_COMPACT = replace(BASE, lora=LoraSettings(top_layers=4), prompts=COMPACT_PROMPT)


@dataclass(frozen=True)
class Variant:
    """One row: a model config and step shape; ``warm_items`` fills the item cache before the timed steps."""

    name: str
    config: R2ecConfig
    mode: str = "contrastive"
    users: int = 4
    warm_items: bool = False
    upcoming_targets: int = 1  # positives per user prompt (TrainConfig.upcoming_targets)


BF16_TOP4_COMPACT = replace(TOP4_COMPACT, dtype="bfloat16")
VARIANTS = [
    Variant("straightforward: LoRA on all 30 layers, 20-item prompts with times", BASE),
    Variant("LoRA on the top 4 layers (lower 26 run without autograd)", replace(BASE, lora=LoraSettings(top_layers=4))),
    Variant("top 4 layers + compact prompts (10 items, no elapsed times)", TOP4_COMPACT),
    Variant("same in bf16 (fp32 LoRA weights)", BF16_TOP4_COMPACT),
    Variant("top 4 + compact + item prompts' frozen layers cached", TOP4_COMPACT, warm_items=True),
    Variant("same at 16 users per step", TOP4_COMPACT, users=16, warm_items=True),
    Variant(
        "same in bf16 (what dtype auto picks on a CPU with bf16 instructions)",
        BF16_TOP4_COMPACT,
        users=16,
        warm_items=True,
    ),
    Variant(
        "same + 4 upcoming targets per user prompt (the quality benchmark's contrastive setting)",
        BF16_TOP4_COMPACT,
        users=16,
        warm_items=True,
        upcoming_targets=4,
    ),
    Variant(
        "RecPO step: top 4 + compact + cached items, 4 users x 4 rollouts x <=32 tokens",
        replace(TOP4_COMPACT, reasoning=True),
        mode="recpo",
        users=4,
        warm_items=True,
    ),
    Variant(
        "same RecPO step in bf16 (the quality benchmark's RecPO setting on this CPU)",
        replace(BF16_TOP4_COMPACT, reasoning=True),
        mode="recpo",
        users=4,
        warm_items=True,
    ),
]


def time_variant(variant: Variant, data, cache: Path, steps: int) -> dict[str, float]:
    """Median seconds of ``loss + backward + AdamW step``.

    ``variant.warm_items`` runs the same steps once untimed first (same batches and negatives: the sampler's state is
    restored), so the timed steps find every item prompt's frozen-layer states cached, as a training run does
    after its first item-table refresh.
    """
    config, batch_size = variant.config, variant.users
    recommender = R2ecRecommender.create(config, cache)
    train_config = TrainConfig(
        mode=variant.mode,
        batch_size=batch_size,
        eval_samples=1,
        max_new_tokens=32,
        upcoming_targets=variant.upcoming_targets,
    )
    trainer = R2ecTrainer(recommender, data, train_config)
    recommender.item_table = torch.nn.functional.normalize(torch.randn(data.n_items, recommender.dim), dim=1)
    recommender.item_mean = torch.zeros(recommender.dim)
    trainer.item_table_built = True
    loss_fn = trainer._recpo_loss if variant.mode == "recpo" else trainer._contrastive_loss
    sampler_state = trainer.rng.bit_generator.state
    for _pass in range(2 if variant.warm_items else 1):  # the last pass is timed
        trainer.rng.bit_generator.state = sampler_state
        batches, durations, tokens, positives = trainer._batches(), [], [], []
        for _ in range(steps + 1):
            batch, upcoming = next(batches)
            tokens.append(sum(len(p) for p in recommender.user_prompt_ids(batch, data.items)) / len(batch))
            positives.append(int((upcoming != PAD).sum()))
            started = time.perf_counter()
            loss, _ = loss_fn(batch, upcoming)
            trainer.optimizer.zero_grad()
            loss.backward()
            trainer.optimizer.step()
            durations.append(time.perf_counter() - started)
    step_s = statistics.median(durations[1:])
    return {
        "s_per_step": round(step_s, 2),
        "samples_per_s": round(batch_size / step_s, 3),
        "positives_per_s": round(statistics.mean(positives[1:]) / step_s, 3),
        "users_per_step": batch_size,
        "prompt_tokens": round(statistics.mean(tokens), 1),
        "dtype": str(resolve_dtype(config.dtype)).removeprefix("torch."),
    }


def main(steps: int = 2) -> None:
    settings = load_settings()
    prepare_data.run(settings, "training-speed", "ml-100k")
    data = load_prepared(settings, "ml-100k")
    rows = []
    for variant in VARIANTS:
        result = time_variant(variant, data, settings.root / "cache", steps)
        rows.append({"variant": variant.name, "mode": variant.mode, **result})
        print(json.dumps(rows[-1]), flush=True)
    baseline = rows[0]["samples_per_s"]
    for row in rows:
        row["speedup_vs_straightforward"] = round(row["samples_per_s"] / baseline, 2)
        row["positives_speedup_vs_straightforward"] = round(row["positives_per_s"] / baseline, 2)
    meta = {
        "command": ".venv/bin/python -m benchmarks.training_speed",
        "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"bf16 instructions (AVX512-BF16/AMX): {cpu_has_fast_bf16()}",
        "timed_steps_per_variant": steps,
        "note": "median of timed steps after one warm-up step, nothing else running",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "training_speed.json").write_text(json.dumps({"meta": meta, "variants": rows}, indent=2) + "\n")
    lines = [
        f"# Training-step speed\n\nCommand: `{meta['command']}`  \nMachine: {meta['machine']}  \n{meta['note']}.\n",
        "| variant | dtype | prompt tokens | s/step | samples/s | x straightforward | positives/s "
        "| x straightforward |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['dtype']} | {r['prompt_tokens']} | {r['s_per_step']} | {r['samples_per_s']} "
        f"| {r['speedup_vs_straightforward']} | {r['positives_per_s']} | {r['positives_speedup_vs_straightforward']} |"
        for r in rows
    ]
    (RESULTS / "training_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
