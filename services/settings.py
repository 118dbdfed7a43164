"""One typed settings object for every job, read once from ``R2EC_*`` environment variables.

Defaults describe the embedded world (no servers): everything the service writes lives under ``home``
(``./var`` unless ``R2EC_HOME`` is set). Production overrides the URLs (Postgres, MLflow server, Qdrant
server) through the same variables, or through an env file named by ``R2EC_ENV_FILE``.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field
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

    @cached_property
    def root(self) -> Path:
        """Absolute state folder (absolute because SQLite URLs resolve against the working directory)."""
        return self.home.expanduser().resolve()

    def data_dir(self, dataset: str | None = None) -> Path:
        """Where the canonical parquet files of a dataset live."""
        return self.root / "data" / (dataset or self.dataset)


def load_settings(**overrides: object) -> Settings:
    """Build the settings; keyword overrides win over the environment (used by the CLI and tests)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
