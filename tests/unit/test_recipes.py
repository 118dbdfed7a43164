"""Recipes: the product command and the quality benchmark train the same model; a recipe is a file too."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.quality import TrainingRun, phase_config
from r2ec.data.synthetic import generate_synthetic
from r2ec.modeling.recommender import R2ecRecommender
from r2ec.training.recipes import HEADLINE, RECIPES, TINY, Recipe, get_recipe
from services.cli import build_parser, training_recipe
from services.datastore import write_dataset
from services.jobs import train
from services.settings import load_settings


def test_product_command_and_quality_benchmark_build_the_same_train_configs() -> None:
    args = build_parser().parse_args(["train", "--recipe", HEADLINE, "--out", "x"])
    product = training_recipe(args)
    benchmark = [phase_config(TrainingRun(), phase.mode) for phase in product.phases]
    assert list(product.phases) == benchmark
    # the headline numbers of quality.md: tau 0.1, 4 upcoming targets, a 14-day recency half-life
    contrastive = product.phase("contrastive")
    assert (product.model.tau, contrastive.upcoming_targets, contrastive.recency_half_life_days) == (0.1, 4, 14.0)
    budget = build_parser().parse_args(["train", "--recipe", HEADLINE, "--out", "x", "--max-minutes", "5"])
    assert {p.max_minutes for p in training_recipe(budget).phases} == {5.0}
    assert phase_config(TrainingRun(contrastive_minutes=5.0), "contrastive") == training_recipe(budget).phases[0]


def test_a_recipe_round_trips_through_a_json_file(tmp_path: Path) -> None:
    for recipe in RECIPES.values():
        path = tmp_path / f"{recipe.name}.json"
        path.write_text(json.dumps(recipe.to_dict()))
        assert get_recipe(str(path)) == recipe


@pytest.mark.parametrize(
    ("text", "message"),
    [("{}", "not a recipe"), ('{"name": "x", "version": 1, "model": {}, "phases": []}', "no phase")],
)
def test_a_broken_recipe_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        get_recipe(str(path))
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("no-such-recipe")


def test_init_keeps_the_checkpoints_own_config(tmp_path: Path, tiny_cache: Path) -> None:
    """--init continues a checkpoint with its own model config, not the recipe's (tau here), unless overridden."""
    settings = load_settings(home=tmp_path)
    write_dataset(settings, "synthetic", *generate_synthetic())
    start = R2ecRecommender.create(replace(TINY.model, tau=0.3), tiny_cache)
    start.save(tmp_path / "start")
    recipe = replace(TINY.only(["contrastive"]).with_budget(max_steps=2, eval_every=2), name="tiny-short")
    start_dir = tmp_path / "start"
    summary = train.run(settings, "init-test", recipe, tmp_path / "out", "synthetic", init_checkpoint=start_dir)
    saved = json.loads((Path(summary["checkpoint"]) / "r2ec.json").read_text())["config"]
    assert saved["tau"] == 0.3 and TINY.model.tau != 0.3
    assert summary["recipe"] == "tiny-short@v1" and set(summary["phases"]) == {"contrastive"}


def test_recipe_phases_must_be_distinct_modes() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Recipe("x", 1, "", TINY.model, (TINY.phases[0], TINY.phases[0]))
