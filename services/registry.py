"""The one MLflow adapter: training runs, the logged model, and the registry's aliases.

Switch pattern for models (architecture.md): every registered version of ``r2ec`` gets alias ``challenger``;
``champion`` is what the jobs serve. A gate compares the challenger with the champion on the same validation
split and records its verdict as version tags; promotion and rollback only move the ``champion`` alias (no
stages). Jobs resolve an alias to a version number once, with ``get_model_version_by_alias``.

Embedded default: ``sqlite:///<state>/mlflow.db`` with artifacts in ``<state>/mlartifacts``; production: the
MLflow server URL, whose artifact store the server owns.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from services.lake import clean_dir
from services.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_ARTIFACT = "model"
# Pinned so that rebuilding the model's environment never resolves a CUDA torch (environment.md).
PINNED_PACKAGES = ("torch", "transformers", "peft", "accelerate", "gguf", "mlflow", "numpy", "pandas", "pyarrow")
TAG_GATE, TAG_GATE_DETAIL, TAG_GATE_SPLIT = "gate", "gate_detail", "gate_split"
TAG_PROMOTED_FROM = "promoted_from"
TAG_DIGEST = "checkpoint_digest"


class RegistryError(Exception):
    """A registry request that cannot be done as asked (no champion, nothing to roll back to, unknown version)."""


def metric_key(name: str) -> str:
    """MLflow names allow no ``@``: ``valid_ndcg@10`` is logged as ``valid_ndcg_at_10``."""
    return name.replace("@", "_at_")


def pip_requirements() -> list[str]:
    """Exact pins of the installed packages the model needs (``+cpu``-style local labels dropped)."""
    return [f"{name}=={installed_version(name).split('+')[0]}" for name in PINNED_PACKAGES]


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow (fluent API and client) at the configured store; create the experiment if needed."""
    if not settings.show_progress:  # artifact download bars would fill task logs and error output
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    client = MlflowClient(settings.mlflow_uri, settings.mlflow_uri)
    if client.get_experiment_by_name(settings.mlflow_experiment) is None:
        embedded = settings.mlflow_tracking_uri is None
        location = (settings.root / "mlartifacts").as_uri() if embedded else None
        client.create_experiment(settings.mlflow_experiment, artifact_location=location)
    mlflow.set_experiment(settings.mlflow_experiment)
    return client


class MlflowLogger:
    """The trainer's :class:`~r2ec.training.logging.MetricsLogger`, writing into the active MLflow run."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Nested config dicts become dotted names (``train.learning_rate``), so each is a searchable param."""
        mlflow.log_params({metric_key(k): v for k, v in _flatten(params).items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        numbers = {metric_key(k): float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        mlflow.log_metrics(numbers, step=step)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@contextmanager
def training_run(
    settings: Settings,
    dataset: str,
    interactions: pd.DataFrame,
    feature_snapshot: str | None = None,
    run_name: str | None = None,
    samples_from: str = "prepared",
) -> Iterator[str]:
    """An MLflow run around one training: dataset input, where samples came from, then wall time and peak memory.

    Yields the run id; log into it with :class:`MlflowLogger` while it is open.
    """
    connect(settings)
    started = time.perf_counter()
    with mlflow.start_run(run_name=run_name) as run:
        source = str(clean_dir(settings, dataset) if samples_from == "feast" else settings.data_dir(dataset))
        mlflow.log_input(mlflow.data.from_pandas(interactions, source=source, name=dataset), context="training")
        tags = {"dataset": dataset, "samples_from": samples_from, "feature_snapshot": feature_snapshot or "none"}
        mlflow.set_tags({**tags, "host": platform.node()})
        try:
            yield run.info.run_id
        finally:
            mlflow.log_metrics(
                {
                    "wall_s": time.perf_counter() - started,
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )


class R2ecPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the logged checkpoint into an ``R2ecRecommender`` with the catalogue it was registered with.

    Input: a DataFrame with a ``history`` column (catalogue indices, oldest first) and optionally
    ``history_rating``, ``history_time`` and ``target_time``. Output: a DataFrame with each row's
    ``scores`` over the whole catalogue (float32 list) and its ``rationale``.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from r2ec.modeling.recommender import R2ecRecommender

        cache_dir = Path(context.model_config["cache_dir"])
        self.recommender = R2ecRecommender.load(Path(context.artifacts["checkpoint"]), cache_dir)
        self.recommender.set_catalogue(pd.read_parquet(context.artifacts["catalogue"]))

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        import torch

        from r2ec.inference import read_users, samples_from_histories
        from r2ec.modeling.scoring import cosine_scores

        def column(name: str) -> list | None:
            return list(model_input[name]) if name in model_input else None

        n = len(model_input)
        samples = samples_from_histories(
            user_ids=column("user_id") or [str(i) for i in range(n)],
            histories=list(model_input["history"]),
            ratings=column("history_rating"),
            times=column("history_time"),
            target_times=column("target_time") or [0] * n,
            max_history=max(1, max((len(h) for h in model_input["history"]), default=1)),
        )
        readout = read_users(self.recommender, samples)
        model = self.recommender
        scores = cosine_scores(torch.from_numpy(readout.vectors), model.item_table, model.config.tau)
        return pd.DataFrame({"scores": list(scores.numpy().astype(np.float32)), "rationale": readout.rationales})


def register_checkpoint(settings: Settings, checkpoint: Path, catalogue: pd.DataFrame) -> str:
    """Log ``checkpoint`` as one pyfunc model in the active run, register it, give it alias ``challenger``."""
    client = connect(settings)
    with _tmp_parquet(settings, catalogue) as catalogue_path:
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=R2ecPyfunc(),
            artifacts={"checkpoint": str(checkpoint), "catalogue": str(catalogue_path)},
            model_config={"cache_dir": str(settings.root / "cache")},
            pip_requirements=pip_requirements(),
            registered_model_name=settings.registry_model_name,
        )
    version = str(info.registered_model_version)
    config = json.loads((checkpoint / "r2ec.json").read_text())["config"]
    client.set_model_version_tag(settings.registry_model_name, version, "template_version", config["template_version"])
    client.set_registered_model_alias(settings.registry_model_name, CHALLENGER, version)
    return version


def _scratch(settings: Settings) -> Path:
    """Temporary files stay under the state folder (ALL state lives there, architecture.md)."""
    folder = settings.root / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def _tmp_parquet(settings: Settings, frame: pd.DataFrame) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=_scratch(settings)) as tmp:
        path = Path(tmp) / "catalogue.parquet"
        frame.to_parquet(path, index=False)
        yield path


def checkpoint_digest(checkpoint: Path) -> str:
    """Fingerprint of a checkpoint's files (adapter weights, config, centring vector)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(path.relative_to(checkpoint).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def version_with_tag(settings: Settings, key: str, value: str) -> str | None:
    """The newest version whose tag ``key`` equals ``value``, or None."""
    client = connect(settings)
    found = client.search_model_versions(f"name = '{settings.registry_model_name}' and tag.{key} = '{value}'")
    return str(max(int(mv.version) for mv in found)) if found else None


def tag_version(settings: Settings, version: str, tags: dict[str, str]) -> None:
    client = connect(settings)
    for key, value in tags.items():
        client.set_model_version_tag(settings.registry_model_name, version, key, value)


def tag_metrics(settings: Settings, version: str, metrics: dict[str, float]) -> None:
    """Evaluation results (``valid_ndcg@10`` …) as version tags, at full precision: the gate compares them."""
    client = connect(settings)
    for key, value in metrics.items():
        client.set_model_version_tag(settings.registry_model_name, version, metric_key(key), repr(float(value)))


def alias_version(settings: Settings, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or the registered model) does not exist."""
    try:
        return connect(settings).get_model_version_by_alias(settings.registry_model_name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def resolve(settings: Settings, ref: str) -> ModelVersion:
    """A version number or an alias, resolved once to a concrete version (jobs record its number)."""
    if ref.isdigit():
        try:
            return connect(settings).get_model_version(settings.registry_model_name, ref)
        except MlflowException as error:
            raise RegistryError(f"model {settings.registry_model_name!r} has no version {ref}") from error
    found = alias_version(settings, ref)
    if found is None:
        raise RegistryError(f"model {settings.registry_model_name!r} has no alias {ref!r}")
    return found


@contextmanager
def checkpoint_of(settings: Settings, version: ModelVersion) -> Iterator[Path]:
    """The version's checkpoint folder, fetched from the artifact store; deleted when the block ends."""
    uri = f"models:/{settings.registry_model_name}/{version.version}"
    with tempfile.TemporaryDirectory(dir=_scratch(settings)) as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        # pyfunc keeps a folder artifact under its own base name: read the path the MLmodel file recorded
        flavor = mlflow.models.Model.load(local / "MLmodel").flavors["python_function"]
        yield local / flavor["artifacts"]["checkpoint"]["path"]


@dataclass(frozen=True)
class GateResult:
    """Verdict of challenger vs champion on one validation split; ``champion`` None = nothing to beat."""

    passed: bool
    detail: str
    champion: str | None


def record_gate(
    settings: Settings,
    version: str,
    split: str,
    challenger_value: float,
    champion: ModelVersion | None,
    champion_value: float | None,
) -> GateResult:
    """Decide and tag: passes when there is no champion, or it beats the champion by ``gate_min_delta``."""
    metric = settings.gate_metric
    if champion is None or champion_value is None:
        result = GateResult(True, f"{metric} {challenger_value:.4f}; no champion to beat", None)
    else:
        margin = challenger_value - champion_value
        result = GateResult(
            margin >= settings.gate_min_delta,
            f"{metric} {challenger_value:.4f} vs champion v{champion.version} {champion_value:.4f} "
            f"(margin {margin:+.4f}, needed {settings.gate_min_delta:+.4f})",
            str(champion.version),
        )
    client = connect(settings)
    tags = {TAG_GATE: "passed" if result.passed else "failed", TAG_GATE_DETAIL: result.detail, TAG_GATE_SPLIT: split}
    for key, value in tags.items():
        client.set_model_version_tag(settings.registry_model_name, version, key, value)
    return result


def promote(settings: Settings, version: str) -> dict[str, str | None]:
    """Move ``champion`` to ``version``; the version remembers the one it replaced (for rollback)."""
    target = resolve(settings, version)
    previous = alias_version(settings, CHAMPION)
    if previous is not None and previous.version == target.version:
        return {"champion": str(target.version), "previous": previous.tags.get(TAG_PROMOTED_FROM)}
    client = connect(settings)
    name = settings.registry_model_name
    if previous is not None:
        client.set_model_version_tag(name, str(target.version), TAG_PROMOTED_FROM, str(previous.version))
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    return {"champion": str(target.version), "previous": None if previous is None else str(previous.version)}


WEBHOOK_NAME = "r2ec-champion"


def ensure_webhook(settings: Settings, url: str) -> dict[str, str]:
    """Register (or update) the registry webhook that tells ``url`` when an alias is set, signed with the secret.

    Webhooks are sent by an MLflow tracking server with a SQL backend, so ``mlflow_tracking_uri`` must be one;
    the server needs ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`` to keep the secret across restarts.
    """
    if not (settings.mlflow_tracking_uri or "").startswith(("http://", "https://")):
        raise RegistryError("webhooks are sent by an MLflow server: set R2EC_MLFLOW_TRACKING_URI to its URL")
    if settings.webhook_secret is None:
        raise RegistryError("set R2EC_WEBHOOK_SECRET (the receiver verifies every call with it)")
    client = connect(settings)
    events, secret = ["model_version_alias.created"], settings.webhook_secret.get_secret_value()
    description = "r2ec: a champion move starts items_reindex (services.hooks)"
    try:
        existing = [hook for hook in client.list_webhooks() if hook.name == WEBHOOK_NAME]
        if existing:
            hook = client.update_webhook(existing[0].webhook_id, url=url, events=events, secret=secret,
                                         description=description, status="ACTIVE")  # fmt: skip
        else:
            hook = client.create_webhook(WEBHOOK_NAME, url, events, description=description, secret=secret)
    except MlflowException as error:
        raise RegistryError(f"MLflow refused the webhook: {error.message}") from error
    return {"webhook": hook.name, "id": hook.webhook_id, "url": hook.url, "events": ",".join(events),
            "created": "updated" if existing else "created"}  # fmt: skip


def rollback(settings: Settings) -> dict[str, str]:
    """Move ``champion`` back to the version it replaced (the ``promoted_from`` tag of the current one)."""
    current = alias_version(settings, CHAMPION)
    if current is None:
        raise RegistryError(f"model {settings.registry_model_name!r} has no champion to roll back")
    previous = current.tags.get(TAG_PROMOTED_FROM)
    if previous is None:
        raise RegistryError(f"champion v{current.version} replaced no earlier version; promote one explicitly")
    connect(settings).set_registered_model_alias(settings.registry_model_name, CHAMPION, previous)
    return {"champion": previous, "rolled_back": str(current.version)}


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Every version, newest first, with its aliases, gate verdict and metric tags."""
    client = connect(settings)
    name = settings.registry_model_name
    try:
        aliases = client.get_registered_model(name).aliases  # search results carry no aliases
    except MlflowException:
        return []
    found = client.search_model_versions(f"name = '{name}'")
    rows = []
    for mv in sorted(found, key=lambda mv: int(mv.version), reverse=True):
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(alias for alias, version in aliases.items() if str(version) == str(mv.version)),
                "gate": mv.tags.get(TAG_GATE, "-"),
                "gate_detail": mv.tags.get(TAG_GATE_DETAIL, ""),
                "created": pd.Timestamp(mv.creation_timestamp, unit="ms").strftime("%Y-%m-%d %H:%M"),
                "metrics": {k: v for k, v in mv.tags.items() if k.startswith(("valid_", "test_"))},
                "run_id": mv.run_id,
            }
        )
    return rows
