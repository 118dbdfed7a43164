"""Named, versioned training recipes: the model a run builds and the phases that train it.

A recipe is what turns "train R²ec" into one reproducible command: ``r2ec train --recipe NAME`` and the quality
benchmark build their ``TrainConfig`` from the same recipe, so the model the README reports is the model the
product trains. A recipe is plain data: :meth:`Recipe.to_dict` writes it as JSON and ``--recipe path.json``
reads one back, so a variant is a file, not a code change. Bump ``version`` when a field of a named recipe
changes; the version is recorded with every run.

Phases run in order; each continues from the previous phase's best adapter (RecPO from the contrastive
adapter: on a CPU budget RecPO from scratch sees too few users). A phase in ``recpo`` mode reasons, a
``contrastive`` phase does not (the user vector is read right after the prompt).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from r2ec.modeling.backbone import EMBEDDED_BACKBONE, LoraSettings
from r2ec.modeling.generation import GenerationSettings
from r2ec.modeling.prompts import PromptSettings
from r2ec.modeling.recommender import R2ecConfig
from r2ec.training.config import TrainConfig

# The model every CPU recipe trains: SmolLM2-135M, LoRA r16 on the top 4 layers (the lower 26 stay frozen, so
# their forward runs without a graph), compact prompts of the 10 most recent items without elapsed times.
CPU_MODEL = R2ecConfig(
    backbone=EMBEDDED_BACKBONE,
    reasoning=False,
    lora=LoraSettings(top_layers=4),
    prompts=PromptSettings(domain="movies", history_items=10, show_time=False),
    generation=GenerationSettings(max_new_tokens=32),
    tau=0.1,
)


@dataclass(frozen=True)
class Recipe:
    """How to train one model.

    Parameters:
        name, version: what runs and model cards record (``name@vN``).
        description: one paragraph a person reads in ``r2ec train --list-recipes``.
        model: the model built when a run does not start from a checkpoint (``reasoning`` is set per phase).
        phases: the training phases, in order; each starts from the previous phase's best adapter.
    """

    name: str
    version: int
    description: str
    model: R2ecConfig
    phases: tuple[TrainConfig, ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"recipe {self.name!r} has no phase")
        modes = [phase.mode for phase in self.phases]
        if len(set(modes)) != len(modes) or "zero-shot" in modes:
            raise ValueError(f"recipe {self.name!r}: phases must be distinct training modes, not {modes}")

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"

    def phase(self, mode: str) -> TrainConfig:
        for phase in self.phases:
            if phase.mode == mode:
                return phase
        raise ValueError(f"recipe {self.label} has no {mode!r} phase; it has {[p.mode for p in self.phases]}")

    def only(self, modes: list[str]) -> Recipe:
        """This recipe with only the phases ``modes`` (in the recipe's order)."""
        return replace(self, phases=tuple(self.phase(mode) for mode in modes))

    def with_budget(self, **changes: Any) -> Recipe:
        """Every phase with these ``TrainConfig`` fields changed (None values are ignored)."""
        changes = {key: value for key, value in changes.items() if value is not None}
        return replace(self, phases=tuple(replace(phase, **changes) for phase in self.phases)) if changes else self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        return cls(
            name=values["name"],
            version=int(values["version"]),
            description=values.get("description", ""),
            model=R2ecConfig.from_dict(values["model"]),
            phases=tuple(TrainConfig(**phase) for phase in values["phases"]),
        )


_NEGATIVES = {"n_negatives": 64, "popularity_negatives": True, "sampling_correction": True}

SMOLLM2_CPU = Recipe(
    name="smollm2-cpu",
    version=1,
    description=(
        "The headline CPU model of benchmarks/results/quality.md: 60 minutes of contrastive training (16 users "
        "per step, each prompt trained towards its next 4 targets, batches drawn with a 14-day recency "
        "half-life), then 12 minutes of RecPO from the best contrastive adapter (4 users x 4 rollouts of 32 "
        "reasoning tokens per step). 2-core CPU with bf16, SmolLM2-135M."
    ),
    model=CPU_MODEL,
    phases=(
        TrainConfig(
            mode="contrastive",
            max_steps=100_000,
            max_minutes=60.0,
            batch_size=16,
            learning_rate=3e-4,
            recency_half_life_days=14.0,
            upcoming_targets=4,
            eval_every=50,
            eval_samples=300,
            patience=100,
            **_NEGATIVES,
        ),
        TrainConfig(
            mode="recpo",
            max_steps=100_000,
            max_minutes=12.0,
            batch_size=4,
            group_size=4,
            learning_rate=1e-4,
            max_new_tokens=32,
            eval_every=30,
            eval_samples=150,
            patience=2,
            **_NEGATIVES,
        ),
    ),
)

SMOLLM2_CPU_SERVED = Recipe(
    name="smollm2-cpu-served",
    version=1,
    description=(
        "Continues smollm2-cpu's contrastive adapter (r2ec train --init DIR) where the service reads the vector: "
        "after the untouched backbone's greedy reasoning (served_reasoning), 25 minutes, so that 60 + 25 minutes "
        "of training fit a 90-minute CPU budget. The checkpoint is served with the backbone writing the reasoning."
    ),
    model=replace(CPU_MODEL, reasoning=True, reasoning_writer="backbone"),
    phases=(
        replace(
            SMOLLM2_CPU.phase("contrastive"),
            served_reasoning=True,
            max_minutes=25.0,
            learning_rate=1e-4,
            eval_samples=150,
        ),
    ),
)


TINY = Recipe(
    name="tiny",
    version=1,
    description="A random 2-layer model on the real tokenizer, a few steps of each phase: for tests and smoke runs.",
    model=replace(
        CPU_MODEL,
        backbone="tiny",
        dtype="float32",
        lora=LoraSettings(rank=8, alpha=16, top_layers=2),
        prompts=PromptSettings(domain="items", history_items=8, show_time=False),
        generation=GenerationSettings(max_new_tokens=6),
    ),
    phases=(
        TrainConfig(mode="contrastive", max_steps=6, batch_size=8, n_negatives=8, eval_every=3, eval_samples=16),
        TrainConfig(
            mode="recpo", max_steps=2, batch_size=2, max_new_tokens=6, n_negatives=8, eval_every=2, eval_samples=8
        ),
    ),
)

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (SMOLLM2_CPU, SMOLLM2_CPU_SERVED, TINY)}
HEADLINE = SMOLLM2_CPU.name


def get_recipe(name_or_path: str) -> Recipe:
    """A named recipe, or one read from a JSON file (``Recipe.to_dict``'s shape)."""
    if name_or_path in RECIPES:
        return RECIPES[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        try:
            return Recipe.from_dict(json.loads(path.read_text()))
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a recipe ({type(error).__name__}: {error})") from None
    raise ValueError(f"unknown recipe {name_or_path!r}; named recipes: {', '.join(RECIPES)}, or a .json file")
