"""Jobs: register the Feast definitions over the lake, and load the online store incrementally."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services import features
from services.datastore import read_dataset
from services.lake import read_clean_log
from services.settings import Settings


def apply(settings: Settings, run_id: str, dataset: str | None = None) -> dict[str, Any]:
    """Rewrite the source tables from the clean lake and the catalogue, then apply the definitions."""
    _, items = read_dataset(settings, dataset)
    summary = features.apply(settings, read_clean_log(settings, dataset), items)
    return {"run_id": run_id, "dataset": dataset or settings.dataset, **summary}


def materialize(
    settings: Settings, run_id: str, dataset: str | None = None, end: datetime | None = None
) -> dict[str, Any]:
    """Refresh the source tables from the lake, then load feature rows up to ``end`` into the online store.

    Refused before ``apply`` has registered the definitions: Feast would load nothing and say nothing."""
    if not features.feature_store(settings).list_feature_views():
        raise ValueError(
            f"no Feast feature views are registered in project {settings.feast_project!r}: "
            "run `r2ec features apply` before `r2ec features materialize`"
        )
    _, items = read_dataset(settings, dataset)
    rows = features.write_sources(settings, read_clean_log(settings, dataset), items)
    return {
        "run_id": run_id,
        "dataset": dataset or settings.dataset,
        "rows": rows,
        **features.materialize(settings, end),
    }
