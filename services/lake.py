"""The lake: where validated interaction logs land, and the one reader of what landed.

Layout under ``<state>/lake/<dataset>/``: clean rows as parquet partitions by day
(``interactions/day=YYYY-MM-DD/<batch>.parquet``), rejected rows with their reasons
(``quarantine/<batch>.parquet``) and one manifest per landed batch (``batches/<batch>.json``). A batch is named by
the hash of its file's bytes, so landing the same file again rewrites the same files. Every file is written to a
temporary name and renamed, so a reader sees a whole file or none. Feast and the jobs read the lake through
:func:`read_clean_log`; nothing here knows how rows were validated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from r2ec.data.schema import INTERACTION_COLUMNS
from services.settings import Settings

CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]"


def strip_controls(text: pd.Series) -> pd.Series:
    """Remove control and invisible formatting characters: logs and catalogues are untrusted text."""
    return text.str.replace(CONTROL_CHARACTERS, "", regex=True)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to a temporary file beside ``path``, then rename it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def clean_dir(settings: Settings, dataset: str | None = None) -> Path:
    return settings.lake_dir(dataset) / "interactions"


def quarantine_file(settings: Settings, batch: str, dataset: str | None = None) -> Path:
    return settings.lake_dir(dataset) / "quarantine" / f"{batch}.parquet"


def _manifest(settings: Settings, batch: str, dataset: str | None) -> Path:
    return settings.lake_dir(dataset) / "batches" / f"{batch}.json"


def already_landed(settings: Settings, clean: pd.DataFrame, batch: str, dataset: str | None = None) -> np.ndarray:
    """Mask of ``clean`` rows that another batch already landed (same user, item, time and rating)."""
    days = clean["event_time"].dt.strftime("day=%Y-%m-%d").unique()
    landed = [
        pd.read_parquet(path, columns=list(INTERACTION_COLUMNS))
        for day in days
        for path in (clean_dir(settings, dataset) / day).glob("*.parquet")
        if path.stem != batch
    ]
    if not landed:
        return np.zeros(len(clean), dtype=bool)
    key = list(INTERACTION_COLUMNS)
    seen = pd.concat(landed, ignore_index=True).drop_duplicates(key)
    return clean[key].merge(seen, on=key, how="left", indicator=True)["_merge"].eq("both").to_numpy()


def land(
    settings: Settings, clean: pd.DataFrame, quarantine: pd.DataFrame, batch: str, dataset: str | None = None
) -> dict[str, Any]:
    """Write clean partitions by day and the quarantine file of an accepted batch; replaces its earlier copy."""
    manifest = _manifest(settings, batch, dataset)
    previous = json.loads(manifest.read_text()) if manifest.exists() else None
    ingested_at = pd.Timestamp(previous["ingested_at"]) if previous else pd.Timestamp.now(tz="UTC")
    clean = clean.assign(batch=batch, ingested_at=ingested_at)
    written = set()
    for day, part in clean.groupby(clean["event_time"].dt.strftime("day=%Y-%m-%d"), sort=True):
        path = clean_dir(settings, dataset) / str(day) / f"{batch}.parquet"
        write_parquet_atomic(part, path)
        written.add(path)
    for stale in clean_dir(settings, dataset).glob(f"day=*/{batch}.parquet"):
        if stale not in written:
            stale.unlink()
    quarantine_path = quarantine_file(settings, batch, dataset)
    if len(quarantine):
        write_parquet_atomic(quarantine.assign(batch=batch), quarantine_path)
    else:
        quarantine_path.unlink(missing_ok=True)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"batch": batch, "ingested_at": ingested_at.isoformat()}) + "\n")
    return {
        "already_ingested": previous is not None,
        "days": len(written),
        "quarantine_path": str(quarantine_path) if len(quarantine) else None,
    }


def read_clean_log(settings: Settings, dataset: str | None = None) -> pd.DataFrame:
    """All clean interactions of a dataset in log order: batches by first ingest, rows as they came in."""
    paths = sorted(clean_dir(settings, dataset).glob("day=*/*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no clean interactions under {clean_dir(settings, dataset)}: run `r2ec ingest`")
    log = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    log = log.sort_values(["ingested_at", "batch", "source_row"], kind="stable", ignore_index=True)
    log["event_time"] = pd.to_datetime(log["event_time"], utc=True).astype("datetime64[ns, UTC]")
    return log
