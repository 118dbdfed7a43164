"""One typed settings object for every job, read once from ``R2EC_*`` environment variables.

Defaults describe the embedded world (no servers): everything the service writes lives under ``home``
(``./var`` unless ``R2EC_HOME`` is set). Production overrides the URLs (Postgres, MLflow server, Qdrant
server) through the same variables, or through an env file named by ``R2EC_ENV_FILE``.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Resolved configuration of the service. Precedence: defaults < env file < environment."""

    model_config = SettingsConfigDict(
        env_prefix="R2EC_", env_file=os.environ.get("R2EC_ENV_FILE"), extra="ignore", frozen=True
    )

    home: Path = Field(default=Path("var"), description="Folder that holds all state of the embedded world.")
    dataset: str = Field(default="ml-100k", description="Dataset the jobs work on by default.")
    max_history: int = Field(default=20, ge=1, description="Items of history per sample (method.md §4).")
    seed: int = Field(default=0, description="Seed for every random choice of the jobs.")
    progress: bool | None = Field(
        default=None, description="Show progress bars; None = only when stderr is a terminal."
    )

    dtype: Literal["auto", "bfloat16", "float32"] | None = Field(
        default=None,
        description="Weights dtype of R²ec at inference; None = the checkpoint's own (auto: bf16 on GPUs).",
    )
    inference_batch_size: int = Field(
        default=32, ge=1, description="Users per batch when scoring and generating reasoning; raise it on a GPU."
    )
    item_states_cache: bool = Field(
        default=True,
        description="Keep the frozen lower layers' outputs for the item prompts under <state>/cache/item-states, so "
        "a new adapter of the same backbone re-encodes the catalogue through its LoRA layers only "
        "(ML-100k: 1,682 items, ~120 MB in bf16).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow server URL (production); None = sqlite:///<state>/mlflow.db, local artifacts."
    )
    mlflow_experiment: str = Field(default="r2ec", description="MLflow experiment that holds the training runs.")
    registry_model_name: str = Field(default="r2ec", description="Registered model that versions the checkpoints.")
    gate_metric: str = Field(default="ndcg@10", description="Validation metric the promotion gate compares.")
    gate_min_delta: float = Field(
        default=0.0, description="Challenger must beat champion's gate metric by at least this much to pass."
    )
    gate_samples: int = Field(
        default=300, ge=1, description="Seeded validation (and test) subset the gate and version tags are scored on."
    )
    auto_promote: bool = Field(default=False, description="Move alias champion to a new version that passed the gate.")
    qdrant_url: str | None = Field(default=None, description="Qdrant server URL (production); None = local mode.")
    qdrant_api_key: SecretStr | None = Field(default=None, description="API key of the Qdrant server, if it wants one.")
    qdrant_path: str | None = Field(
        default=None, description="Local-mode folder, or ':memory:'; None = <state>/qdrant. Ignored with qdrant_url."
    )
    qdrant_exact: bool = Field(
        default=True, description="Exact (brute-force) nearest neighbours on the server; False = HNSW, approximate."
    )
    index_batch_size: int = Field(default=128, ge=64, le=256, description="Points per Qdrant upsert request.")
    index_keep_collections: int = Field(
        default=2, ge=0, description="Previous item collections kept for rollback; older ones are deleted."
    )
    recommend_top_k: int = Field(default=10, ge=1, le=200, description="Items per user in a recommendation run.")
    recommend_chunk_users: int = Field(
        default=64, ge=1, description="Users scored and written per chunk; a killed run resumes after the last chunk."
    )
    rationale_max_degenerate_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A run whose share of degenerate rationales (one repeated 3-gram covering a third of the "
        "words) is above this is not published.",
    )
    rationale_fluency_users: int = Field(
        default=8, ge=0, description="Users per chunk whose rationale fluency (backbone log-likelihood) is measured."
    )

    ingest_max_bad_fraction: float = Field(
        default=0.05, ge=0, le=1, description="Refuse a whole ingest batch when more of its rows than this are bad."
    )
    ingest_max_future_skew_s: float = Field(
        default=3600.0, ge=0, description="Event times later than now plus this many seconds are rejected."
    )
    catalogue_start: datetime = Field(
        default=datetime(1990, 1, 1, tzinfo=UTC),
        description="Earliest valid event time; item texts are valid from this moment on.",
    )
    rating_min: float = Field(default=1.0, description="Lowest rating of the scale (null ratings are allowed).")
    rating_max: float = Field(default=5.0, description="Highest rating of the scale.")
    id_max_chars: int = Field(default=128, ge=1, description="User and item ids longer than this are rejected.")
    text_max_chars: int = Field(default=2000, ge=1, description="Free-text log fields are cut to this length.")
    inbox_dir: Path | None = Field(
        default=None,
        description="Where interaction-log files are dropped, one folder per dataset (the daily DAG ingests "
        "<inbox_dir>/<dataset>/*YYYY-MM-DD*.{csv,parquet,jsonl}); None = <state>/inbox.",
    )
    feast_world: Literal["embedded", "production"] = Field(
        default="embedded",
        description="embedded: duckdb offline, SQLite online and registry under <state>/feast; "
        "production: PostgreSQL registry, offline and online store at feast_postgres_url.",
    )
    feast_project: str = Field(default="r2ec", description="Feast project name; also prefixes production tables.")
    feast_postgres_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/test",
        description="PostgreSQL of the production Feast world (user, password, host, port, database).",
    )
    recstore_url: str | None = Field(
        default=None, description="Recommendations database (production: postgresql+psycopg://…); None = SQLite."
    )
    recstore_reader_url: str | None = Field(
        default=None,
        description="Database of the read API: a role that may read the tables, or a replica; None = the writer's.",
    )
    recstore_reader_role: str = Field(
        default="r2ec_reader",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL login role the migration creates for downstream apps: SELECT on the view only.",
    )
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token every /v1 route of the read API asks for; None = open."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret shared with the MLflow registry webhook; None = the receiver refuses every call.",
    )
    webhook_max_age_s: int = Field(
        default=300, ge=1, description="A webhook call stamped further than this from now is refused (replay)."
    )
    airflow_api_url: str | None = Field(
        default=None, description="Airflow api-server the webhook receiver sends asset events to."
    )
    airflow_username: str | None = Field(
        default=None, description="Airflow user for those events; None = the simple auth manager's open token."
    )
    airflow_password: SecretStr | None = Field(default=None, description="Password of airflow_username.")

    @property
    def show_progress(self) -> bool:
        """Progress bars on when asked, or by default when stderr is a terminal (never in Airflow task logs)."""
        return self.progress if self.progress is not None else sys.stderr.isatty()

    @cached_property
    def root(self) -> Path:
        """Absolute state folder (absolute because SQLite URLs resolve against the working directory)."""
        return self.home.expanduser().resolve()

    def data_dir(self, dataset: str | None = None) -> Path:
        """Where the canonical parquet files of a dataset live."""
        return self.root / "data" / (dataset or self.dataset)

    def lake_dir(self, dataset: str | None = None) -> Path:
        """Where validated interaction logs land: clean partitions by day, quarantine, batch manifests."""
        return self.root / "lake" / (dataset or self.dataset)

    def inbox(self, dataset: str | None = None) -> Path:
        """Where the daily ``interactions_validate`` DAG looks for a dataset's log files."""
        base = self.inbox_dir.expanduser().resolve() if self.inbox_dir else self.root / "inbox"
        return base / (dataset or self.dataset)

    @property
    def item_states_dir(self) -> Path | None:
        """Where item prompts' frozen-layer states are kept (None: computed anew each time)."""
        return self.root / "cache" / "item-states" if self.item_states_cache else None

    @property
    def mlflow_uri(self) -> str:
        """Tracking and registry store: the configured server, else SQLite under the state folder."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def recstore_uri(self) -> str:
        """Recommendations store: the configured database, else SQLite under the state folder."""
        return self.recstore_url or f"sqlite:///{self.root / 'recs.db'}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings; keyword overrides win over the environment (used by the CLI and tests)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def settings_table() -> str:
    """Every setting as a Markdown table (variable, default, meaning): the README's copy is generated from this."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default is None else str(default.value if hasattr(default, "value") else default)
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `R2EC_{name.upper()}` | {f'`{shown}`' if shown else '(none)'} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
