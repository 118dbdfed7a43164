"""The model registry on a real temporary SQLite MLflow store, with tiny-model checkpoints.

One store per module (creating MLflow's tables costs seconds); each test registers what it needs and only
asserts on its own versions or on alias moves it makes itself.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from r2ec.data.samples import PreparedData, prepare
from r2ec.data.synthetic import generate_synthetic
from r2ec.inference import samples_from_histories
from r2ec.modeling.recommender import R2ecConfig, R2ecRecommender
from services import registry
from services.datastore import write_dataset
from services.jobs import index_refresh, model_admin
from services.settings import Settings, load_settings


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry-home")


@pytest.fixture(scope="module")
def data(home: Path) -> PreparedData:
    interactions, items = generate_synthetic(n_users=30, n_items=40, seed=1)
    write_dataset(load_settings(home=home), "synthetic", interactions, items)
    return prepare("synthetic", interactions, items)


def settings_for(home: Path, **overrides: object) -> Settings:
    return load_settings(home=home, dataset="synthetic", gate_samples=12, qdrant_path=str(home / "qdrant"), **overrides)


@pytest.fixture(scope="module")
def checkpoints(home: Path, data: PreparedData) -> dict[int, Path]:
    """Two tiny models that score differently (random LoRA B), saved as checkpoints."""
    saved = {}
    for seed in (1, 2):
        config = R2ecConfig(backbone="tiny", dtype="float32", reasoning=False)
        model = R2ecRecommender.create(config, home / "cache")
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)
        model.set_catalogue(data.items)
        model.save(home / f"ck{seed}")
        saved[seed] = home / f"ck{seed}"
    return saved


def register(settings: Settings, checkpoint: Path, data: PreparedData) -> dict:
    registry.connect(settings)
    with mlflow.start_run():
        return model_admin.register(settings, checkpoint, data)


def at(settings: Settings, alias: str) -> str:
    """The version number an alias points at."""
    return str(registry.resolve(settings, alias).version)


def tags(settings: Settings, version: str) -> dict[str, str]:
    return registry.resolve(settings, version).tags


def test_register_gate_promote_rollback(home, data, checkpoints):
    settings = settings_for(home)
    first = register(settings, checkpoints[1], data)
    assert at(settings, registry.CHALLENGER) == first["version"]
    assert first["gate"] == "passed" and "no champion" in first["gate_detail"]
    assert not first["promoted"]  # auto_promote is off by default
    first_tags = tags(settings, first["version"])
    assert first_tags["gate"] == "passed"
    assert {"valid_ndcg_at_10", "test_ndcg_at_10", "template_version", "gate_split"} <= set(first_tags)

    assert registry.promote(settings, first["version"])["champion"] == first["version"]
    second = register(settings, checkpoints[2], data)
    second_tags = tags(settings, second["version"])
    assert at(settings, registry.CHALLENGER) == second["version"]
    assert at(settings, registry.CHAMPION) == first["version"]
    # same validation rows for both, and the verdict follows the tagged numbers
    assert second_tags["gate_split"] == first_tags["gate_split"]
    assert f"champion v{first['version']}" in second_tags["gate_detail"]
    beats = float(second_tags["valid_ndcg_at_10"]) >= float(first_tags["valid_ndcg_at_10"])
    assert second_tags["gate"] == ("passed" if beats else "failed")

    registry.promote(settings, second["version"])
    listed = {row["version"]: row for row in registry.list_versions(settings)}
    assert listed[second["version"]]["aliases"] == ["challenger", "champion"]
    assert listed[first["version"]]["gate"] == "passed"

    assert registry.rollback(settings) == {"champion": first["version"], "rolled_back": second["version"]}
    assert at(settings, registry.CHAMPION) == first["version"]


def test_gate_threshold_decides_auto_promotion(home, data, checkpoints):
    settings = settings_for(home)
    base = register(settings, checkpoints[1], data)["version"]
    registry.promote(settings, base)

    blocked = register(settings_for(home, auto_promote=True, gate_min_delta=1.0), checkpoints[2], data)
    assert blocked["gate"] == "failed" and not blocked["promoted"]
    assert at(settings, registry.CHAMPION) == base

    allowed = register(settings_for(home, auto_promote=True, gate_min_delta=-1.0), checkpoints[2], data)
    assert allowed["gate"] == "passed" and allowed["promoted"]
    assert at(settings, registry.CHAMPION) == allowed["version"]
    assert tags(settings, allowed["version"])["promoted_from"] == base


def test_rollback_without_a_predecessor_is_refused(tmp_path):
    settings = load_settings(home=tmp_path, registry_model_name="empty")
    with pytest.raises(registry.RegistryError, match="no champion"):
        registry.rollback(settings)
    with pytest.raises(registry.RegistryError, match="no alias"):
        registry.resolve(settings, "champion")


def test_champion_loads_as_pyfunc_with_the_checkpoints_scores(home, data, checkpoints):
    settings = settings_for(home)
    version = register(settings, checkpoints[1], data)["version"]
    registry.promote(settings, version)

    served = mlflow.pyfunc.load_model(f"models:/{settings.registry_model_name}@champion")
    batch = data.test.take(slice(0, 5))
    frame = pd.DataFrame({"history": [row[row >= 0].tolist() for row in batch.history]})
    scores = np.stack(served.predict(frame)["scores"])

    original = R2ecRecommender.load(checkpoints[1], home / "cache")
    original.set_catalogue(data.items)
    samples = samples_from_histories(
        [str(i) for i in range(5)], list(frame["history"]), None, None, [0] * 5, max_history=batch.history.shape[1]
    )
    expected = original.full_sort_predict(samples).numpy()
    assert scores.shape == (5, len(data.items))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    other = R2ecRecommender.load(checkpoints[2], home / "cache")
    other.set_catalogue(data.items)
    assert not np.allclose(scores, other.full_sort_predict(samples).numpy(), atol=1e-3)


def test_training_run_records_params_curves_dataset_and_cost(home, data):
    settings = settings_for(home)
    interactions = pd.read_parquet(settings.data_dir("synthetic") / "interactions.parquet")
    with registry.training_run(settings, "synthetic", interactions, feature_snapshot="2024-03-01T00:00") as run_id:
        logger = registry.MlflowLogger()
        logger.log_params({"train": {"learning_rate": 3e-4}, "model": {"backbone": "tiny"}})
        for step, value in enumerate([0.01, 0.02, 0.03]):
            logger.log_metrics({"valid_ndcg@10": value, "note": "not a number"}, step=step)
    client = registry.connect(settings)
    run = client.get_run(run_id)
    assert run.data.params["train.learning_rate"] == "0.0003"
    assert run.data.tags["feature_snapshot"] == "2024-03-01T00:00"
    assert {"wall_s", "peak_rss_mb"} <= set(run.data.metrics)
    curve = client.get_metric_history(run_id, "valid_ndcg_at_10")
    assert [(m.step, m.value) for m in curve] == [(0, 0.01), (1, 0.02), (2, 0.03)]
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["synthetic"]


def test_index_refresh_serves_the_versions_item_vectors_and_is_idempotent(home, data, checkpoints):
    from services import vectors

    settings = settings_for(home)
    version = register(settings, checkpoints[2], data)["version"]
    first = index_refresh.run(settings, 'refresh', model_version=version)
    second = index_refresh.run(settings, 'refresh', model_version=version)
    assert first["changed"] and first["encoded"] == len(data.items)
    assert not second["changed"] and second["collection"] == first["collection"]

    expected = R2ecRecommender.load(checkpoints[2], home / "cache").encode_items(data.items)
    client = vectors.connect(settings)
    try:
        points = client.retrieve(vectors.ALIAS, ids=[0, 7], with_vectors=True)
        assert {p.payload["model_version"] for p in points} == {version}
        stored = np.array([p.vector for p in sorted(points, key=lambda p: p.id)])
        np.testing.assert_allclose(stored, expected[[0, 7]], atol=1e-5)
    finally:
        client.close()
