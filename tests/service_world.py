"""A small, real embedded world for job tests: the synthetic log landed in the lake, Feast applied, and a tiny
reasoning model registered in MLflow as ``champion`` (no mocks: the same adapters the service uses)."""

from __future__ import annotations

import contextlib
import gc
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

from r2ec.data.synthetic import generate_synthetic
from r2ec.modeling.recommender import R2ecRecommender
from r2ec.training.recipes import TINY
from services.datastore import write_dataset
from services.jobs import features as feature_jobs
from services.jobs import ingest, model_admin
from services.settings import Settings, load_settings

DATASET = "synthetic"


def build_world(home: Path, model_cache: Path, **settings_overrides: object) -> Settings:
    """Land the synthetic log, apply Feast, register and promote a tiny model whose backbone writes the reasoning."""
    settings = load_settings(home=home, dataset=DATASET, progress=False, **settings_overrides)
    interactions, items = generate_synthetic()
    write_dataset(settings, DATASET, interactions, items)
    log_file = home / "inbox" / "synthetic.parquet"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    interactions.to_parquet(log_file, index=False)
    landed = ingest.run(settings, "world-ingest", log_file)
    assert landed["accepted"], landed["message"]
    feature_jobs.apply(settings, "world-features")
    config = replace(TINY.model, reasoning=True, reasoning_writer="backbone")
    model = R2ecRecommender.create(config, model_cache)
    model.set_catalogue(items)  # fixes the centring vector the checkpoint ships with
    model.save(home / "models" / "tiny", metrics={"valid_ndcg@10": 0.0})
    model_admin.register_shipped(settings, "world-register", home / "models" / "tiny", promote=True)
    return settings


def perturbed_copy(source: Path, target: Path, cache: Path) -> Path:
    """Another tiny checkpoint: the same model with every LoRA weight nudged (a different digest and ranking)."""
    import torch

    model = R2ecRecommender.load(source, cache)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.model.named_parameters():
            if "lora_" in name:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    model.save(target, metrics={"valid_ndcg@10": 0.0})
    return target


def copy_world(source: Path, target: Path) -> Path:
    """A copy of a world's state folder with whole SQLite databases. Connections left to the garbage collector are
    closed first (one closing mid-copy deletes its WAL file under copytree) and every WAL is folded into its
    database, so nothing changes while the files are copied."""
    gc.collect()
    for database in source.rglob("*.db"):
        with contextlib.suppress(sqlite3.DatabaseError), contextlib.closing(sqlite3.connect(database)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.db-wal", "*.db-shm"))
    return target
