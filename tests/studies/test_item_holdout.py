"""A control run (studies/item_holdout.py) counts as one only when its training differs from the holdout run's
in nothing but the held-out items and the limits that stop it."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from benchmarks.quality import TrainingRun
from studies.item_holdout import recipe_differences

HOLDOUT = TrainingRun(contrastive_minutes=60.0, hold_out_items=0.05)
STEP_MATCHED = replace(HOLDOUT, hold_out_items=0.0, contrastive_minutes=90.0, contrastive_steps=493)


def budgets(recipe: TrainingRun, steps: int) -> dict[str, Any]:
    return {"r2ec-contrastive": {"recipe": asdict(recipe), "steps": steps}}


def test_a_step_matched_run_on_all_items_is_a_control() -> None:
    assert recipe_differences(budgets(HOLDOUT, 493), budgets(STEP_MATCHED, 493)) == {}


def test_other_steps_another_recipe_or_a_missing_run_are_named() -> None:
    holdout = budgets(HOLDOUT, 493)
    assert recipe_differences(holdout, budgets(STEP_MATCHED, 400)) == {"r2ec-contrastive": {"steps": (493, 400)}}
    other_recipe = budgets(replace(STEP_MATCHED, recipe="tiny"), 493)
    assert recipe_differences(holdout, other_recipe) == {"r2ec-contrastive": {"recipe": (HOLDOUT.recipe, "tiny")}}
    assert recipe_differences(holdout, {}) == {"r2ec-contrastive": "not trained"}
