"""The lake: where validated interaction logs land, and the one reader of what landed.

Layout under ``<state>/lake/<dataset>/``: clean rows as parquet partitions by day
(``interactions/day=YYYY-MM-DD/<batch>.parquet``), rejected rows with their reasons
(``quarantine/<batch>.parquet``) and one manifest per landed batch (``batches/<batch>.json``). A batch is named by
the hash of its file's bytes.

A batch is all or nothing: its files are written under temporary names and renamed, and its manifest is written
last; :func:`read_clean_log` (the one reader: Feast, training samples and the jobs read through it) reads only
batches that have a manifest. Landing holds the dataset's lock (``<state>/lake/<dataset>.lock``), so concurrent
ingests land one after the other and a row another batch landed is seen; under the lock, files that a killed
ingest left without a manifest are removed first. Nothing here knows how rows were validated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from r2ec.data.schema import INTERACTION_COLUMNS
from services.settings import Settings

CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
LAKE_COLUMNS = ("batch", "source_row", "ingested_at")  # what landing adds to each clean row
TMP_SUFFIX = ".tmp"


def strip_controls(text: pd.Series) -> pd.Series:
    """Remove control and invisible formatting characters: logs and catalogues are untrusted text."""
    return text.str.replace(CONTROL_CHARACTERS, "", regex=True)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to a temporary file beside ``path``, then rename it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def write_text_atomic(text: str, path: Path) -> None:
    """``write_parquet_atomic`` for a text file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    tmp.write_text(text)
    tmp.replace(path)


def clean_dir(settings: Settings, dataset: str | None = None) -> Path:
    return settings.lake_dir(dataset) / "interactions"


def quarantine_file(settings: Settings, batch: str, dataset: str | None = None) -> Path:
    return settings.lake_dir(dataset) / "quarantine" / f"{batch}.parquet"


def _manifest(settings: Settings, batch: str, dataset: str | None) -> Path:
    return settings.lake_dir(dataset) / "batches" / f"{batch}.json"


def manifest(settings: Settings, batch: str, dataset: str | None = None) -> dict[str, Any] | None:
    """What the manifest of a landed batch says; None when the batch has not landed."""
    path = _manifest(settings, batch, dataset)
    return json.loads(path.read_text()) if path.exists() else None


def landed_batches(settings: Settings, dataset: str | None = None) -> set[str]:
    """Batches whose manifest exists: the only ones a reader may see."""
    return {path.stem for path in _manifest(settings, "*", dataset).parent.glob("*.json")}


def _clean_files(settings: Settings, dataset: str | None, days: str = "*") -> list[Path]:
    """Clean partition files of landed batches (of the given ``day=`` glob), in path order."""
    landed = landed_batches(settings, dataset)
    return sorted(p for p in clean_dir(settings, dataset).glob(f"day={days}/*.parquet") if p.stem in landed)


@contextmanager
def landing(settings: Settings, dataset: str | None = None) -> Iterator[None]:
    """Hold the dataset's landing lock (blocking) and remove what killed ingests left behind."""
    lake = settings.lake_dir(dataset)
    lake.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lake.with_name(f"{lake.name}.lock")):
        remove_leftovers(settings, dataset)
        yield


def remove_leftovers(settings: Settings, dataset: str | None = None) -> list[Path]:
    """Delete temporary files and files of batches without a manifest; only under the landing lock."""
    lake = settings.lake_dir(dataset)
    landed = landed_batches(settings, dataset)
    stray = [p for p in lake.rglob(f".*{TMP_SUFFIX}")]
    stray += [p for folder in ("interactions/day=*", "quarantine") for p in lake.glob(f"{folder}/*.parquet")]
    removed = [p for p in stray if p.name.endswith(TMP_SUFFIX) or p.stem not in landed]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def already_landed(settings: Settings, clean: pd.DataFrame, dataset: str | None = None) -> np.ndarray:
    """Mask of ``clean`` rows that a landed batch holds (same user, item, UTC time and rating); under the lock."""
    days = set(clean["event_time"].dt.strftime("%Y-%m-%d").unique())
    key = list(INTERACTION_COLUMNS)
    landed = [
        pd.read_parquet(path, columns=key)
        for path in _clean_files(settings, dataset)
        if path.parent.name.removeprefix("day=") in days
    ]
    if not landed:
        return np.zeros(len(clean), dtype=bool)
    seen = pd.concat(landed, ignore_index=True).drop_duplicates(key)
    seen["event_time"] = pd.to_datetime(seen["event_time"], utc=True).astype(clean["event_time"].dtype)
    return clean[key].merge(seen, on=key, how="left", indicator=True)["_merge"].eq("both").to_numpy()


def land(
    settings: Settings,
    clean: pd.DataFrame,
    quarantine: pd.DataFrame,
    batch: str,
    dataset: str | None = None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the clean partitions by day, the quarantine file, then the manifest (with ``record``); under the
    lock, for a batch that has not landed. Returns what the manifest says."""
    ingested_at = pd.Timestamp.now(tz="UTC")
    clean = clean.assign(batch=batch, ingested_at=ingested_at)
    days = clean["event_time"].dt.strftime("day=%Y-%m-%d")
    for day, part in clean.groupby(days, sort=True):
        write_parquet_atomic(part, clean_dir(settings, dataset) / str(day) / f"{batch}.parquet")
    quarantine_path = quarantine_file(settings, batch, dataset) if len(quarantine) else None
    if quarantine_path:
        write_parquet_atomic(quarantine.assign(batch=batch), quarantine_path)
    written = {
        "batch": batch,
        "ingested_at": ingested_at.isoformat(),
        "rows_landed": len(clean),
        "days": int(days.nunique()),
        "quarantine_path": str(quarantine_path) if quarantine_path else None,
        **(record or {}),
    }
    write_text_atomic(json.dumps(written, default=str) + "\n", _manifest(settings, batch, dataset))
    return written


def read_clean_log(settings: Settings, dataset: str | None = None) -> pd.DataFrame:
    """All clean interactions of the landed batches of a dataset in log order: batches by ingest, rows as they
    came in. A batch without a manifest (being landed, or killed half-way) is invisible."""
    paths = _clean_files(settings, dataset)
    if not paths:
        raise FileNotFoundError(f"no clean interactions under {clean_dir(settings, dataset)}: run `r2ec ingest`")
    log = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    log = log.sort_values(["ingested_at", "batch", "source_row"], kind="stable", ignore_index=True)
    log["event_time"] = pd.to_datetime(log["event_time"], utc=True).astype("datetime64[ns, UTC]")
    return log
