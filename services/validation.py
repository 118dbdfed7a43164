"""Validation of incoming interaction logs with Great Expectations 1.x (landing: ``services.lake``).

A batch (one file) goes through four steps:

1. **read** (CSV, parquet or JSON lines) — an unreadable file, a wrong encoding or a missing column is an
   ``InputError``: one line, nothing written;
2. **sanitize** in pandas: control characters are stripped from every text column and free-text columns are
   cut to ``text_max_chars`` (GE can only *flag* such values, we must *repair* them); raw time and rating values
   are parsed into typed columns beside the raw ones; exact duplicate rows are dropped and counted (dropping the
   second copy of a row is not a per-row verdict GE can give);
3. **validate** with the expectation suite of ``build_suite``, kept as code: each expectation carries its
   rejection reason in ``meta``, and ``result_format="COMPLETE"`` tells which rows failed it;
4. **land**: clean rows as parquet partitions by day (``<lake>/interactions/day=YYYY-MM-DD/<batch>.parquet``),
   rejected rows with the list of their reasons under ``<lake>/quarantine/<batch>.parquet``. Above
   ``ingest_max_bad_fraction`` the batch is refused and nothing is written.

``rows_in = rows_clean + rows_quarantined + duplicates_dropped`` always holds. A batch is named by the hash of
its bytes, so re-ingesting the same file rewrites the same files; rows already landed by another batch count as
duplicates, so a renamed or re-encoded copy lands nothing new either.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from r2ec.data.schema import INTERACTION_COLUMNS
from services.lake import strip_controls
from services.settings import Settings

if TYPE_CHECKING:
    import great_expectations as gx

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
ID_COLUMNS = ("user_id", "item_id")
RAW_TIME, RAW_RATING = "event_time_raw", "rating_raw"
CATALOGUE = "catalogue_item_id"  # the row's item id as found in the catalogue, null when unknown
# C0/C1 control characters plus the invisible bidi and zero-width marks that can disguise text.


class InputError(ValueError):
    """The file cannot be validated at all (unreadable, wrong encoding, missing column); one line says why."""


@dataclass(frozen=True)
class Policy:
    """What a valid interaction is; read from the settings once per batch, with the clock fixed."""

    now: datetime
    catalogue_start: datetime
    max_future_skew: timedelta
    rating_min: float
    rating_max: float
    id_max_chars: int
    text_max_chars: int
    max_bad_fraction: float

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime) -> Policy:
        return cls(
            now=now,
            catalogue_start=settings.catalogue_start,
            max_future_skew=timedelta(seconds=settings.ingest_max_future_skew_s),
            rating_min=settings.rating_min,
            rating_max=settings.rating_max,
            id_max_chars=settings.id_max_chars,
            text_max_chars=settings.text_max_chars,
            max_bad_fraction=settings.ingest_max_bad_fraction,
        )


@dataclass
class Outcome:
    """Verdict on one batch: clean rows (canonical + extra text columns), rejected rows with reasons, counts."""

    rows_in: int
    clean: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates_dropped: int
    reasons: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = len(self.clean) + len(self.quarantine) + self.duplicates_dropped
        if total != self.rows_in:  # a bug, never bad input: refuse to land rows that do not add up
            raise AssertionError(f"rows do not reconcile: {self.rows_in} in, {total} accounted for")

    @property
    def bad_fraction(self) -> float:
        return len(self.quarantine) / self.rows_in if self.rows_in else 0.0


# --------------------------------------------------------------------------------------------------- read


def read_log(path: Path) -> pd.DataFrame:
    """The file as a frame of raw values (CSV cells stay strings); any failure is one ``InputError`` line."""
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unsupported file type {path.suffix!r}; expected one of {', '.join(READERS)}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if kind == "csv":
            frame = pd.read_csv(path, dtype=str, encoding="utf-8")
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise InputError(f"{path}: not UTF-8 text (byte {byte:#04x} at offset {error.start})") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file, not even a header") from None
    except Exception as error:  # each reader has its own error types; all mean "cannot read this file"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: unreadable {kind} file ({first_line})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.reset_index(drop=True)


def batch_id(path: Path) -> str:
    """Name of a batch: the hash of the file's bytes, so the same file is always the same batch."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- sanitize


def sanitize(raw: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """Strip control characters from every text column, cap free text, parse times and ratings beside the raw.

    The result is the frame GE validates: ids as stripped strings (NA when empty), ``event_time`` parsed to UTC
    (NaT when missing or unparseable; ``event_time_raw`` keeps what came in), ``rating`` numeric (NaN likewise).
    """
    out = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        values = raw[column]
        if column in ID_COLUMNS or values.dtype == object or pd.api.types.is_string_dtype(values):
            text = strip_controls(values.astype("string")).str.strip()
            # an empty id, time or rating is a missing one; free text is capped
            cap = policy.text_max_chars
            values = text.mask(text == "") if column in INTERACTION_COLUMNS else text.str.slice(0, cap)
        out[column] = values
    out[RAW_TIME] = out.pop("event_time")
    out[RAW_RATING] = out.pop("rating")
    out["event_time"] = parse_event_times(out[RAW_TIME])
    out["rating"] = pd.to_numeric(out[RAW_RATING], errors="coerce").astype("float64")
    return out


def parse_event_times(raw: pd.Series) -> pd.Series:
    """UTC timestamps from datetimes, ISO-8601 strings (naive = UTC) or epoch seconds; NaT where impossible."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        return pd.to_datetime(raw, utc=True)
    text = raw.astype("string")
    epoch = pd.to_numeric(text, errors="coerce")
    iso = pd.to_datetime(text.mask(epoch.notna()), utc=True, errors="coerce", format="ISO8601")
    seconds = pd.to_datetime(epoch.where(epoch.abs() < 1e11), unit="s", utc=True, errors="coerce")
    return iso.fillna(seconds).astype("datetime64[ns, UTC]")


# ----------------------------------------------------------------------------------------------- validate


def build_suite(policy: Policy) -> gx.ExpectationSuite:
    """The expectation suite for interaction logs; ``meta["reason"]`` is what a failing row is quarantined for.

    Row-level expectations only: each must yield ``unexpected_index_list``. Nulls are left to the not-null
    expectations (GE skips them elsewhere), so each bad value gets exactly one reason.

    Catalogue membership is checked on the column ``catalogue_item_id``, the item id looked up in the catalogue
    by ``validate`` (null when unknown), not with ``ExpectColumnValuesToBeInSet``: GE 1.24 re-serializes an
    inline ``value_set`` each time it plans a metric (~1,500 times a run), which made a 20,000-item catalogue cost
    ~15 s per batch whatever its size, and a catalogue of millions of items impossible.
    """
    import great_expectations as gx

    E = gx.expectations
    latest = pd.Timestamp(policy.now + policy.max_future_skew)
    earliest = pd.Timestamp(policy.catalogue_start)

    def derived_not_null(column: str, source: str, reason: str) -> gx.expectations.Expectation:
        """A value derived from ``source`` (parsed, looked up) must exist wherever ``source`` was given."""
        return E.ExpectColumnValuesToNotBeNull(
            column=column, row_condition=f"{source}.notnull()", condition_parser="pandas", meta={"reason": reason}
        )

    expectations = [
        E.ExpectColumnValuesToNotBeNull(column="user_id", meta={"reason": "user_id missing"}),
        E.ExpectColumnValueLengthsToBeBetween(
            column="user_id", max_value=policy.id_max_chars, meta={"reason": "user_id too long"}
        ),
        E.ExpectColumnValuesToNotBeNull(column="item_id", meta={"reason": "item_id missing"}),
        derived_not_null(CATALOGUE, "item_id", "item_id unknown"),
        E.ExpectColumnValuesToNotBeNull(column=RAW_TIME, meta={"reason": "event_time missing"}),
        derived_not_null("event_time", RAW_TIME, "event_time unparseable"),
        E.ExpectColumnValuesToBeBetween(
            column="event_time", max_value=latest, meta={"reason": "event_time in the future"}
        ),
        E.ExpectColumnValuesToBeBetween(
            column="event_time", min_value=earliest, meta={"reason": "event_time before catalogue start"}
        ),
        derived_not_null("rating", RAW_RATING, "rating not a number"),
        E.ExpectColumnValuesToBeBetween(
            column="rating",
            min_value=policy.rating_min,
            max_value=policy.rating_max,
            meta={"reason": "rating out of scale"},
        ),
    ]
    return gx.ExpectationSuite(name="interaction_log", expectations=expectations)


def _context() -> Any:
    """An ephemeral GE context: nothing on disk, no analytics, no progress bars."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def missing_columns(raw: pd.DataFrame) -> list[str]:
    """Required columns absent from a file, checked by GE on its header (a shape suite of its own)."""
    import great_expectations as gx

    context = _context()
    batch = (
        context.data_sources.add_pandas("header").add_dataframe_asset("log").add_batch_definition_whole_dataframe("all")
    )
    suite = gx.ExpectationSuite(
        name="interaction_log_shape",
        expectations=[gx.expectations.ExpectColumnToExist(column=c) for c in INTERACTION_COLUMNS],
    )
    result = batch.get_batch(batch_parameters={"dataframe": raw.head(0)}).validate(suite)
    return [r.expectation_config.kwargs["column"] for r in result.results if not r.success]


def failing_rows(frame: pd.DataFrame, suite: gx.ExpectationSuite) -> dict[str, np.ndarray]:
    """Row positions that fail each reason, from one checkpoint run (``COMPLETE`` results)."""
    import great_expectations as gx

    context = _context()
    batch = (
        context.data_sources.add_pandas("incoming")
        .add_dataframe_asset("log")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="log", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name="ingest", validation_definitions=[definition], result_format={"result_format": "COMPLETE"})
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    failing: dict[str, np.ndarray] = {}
    for validation in result.run_results.values():
        for check in validation.results:
            reason = check.expectation_config.meta["reason"]
            if check.exception_info.get("raised_exception"):
                raise RuntimeError(f"expectation for {reason!r} crashed: {check.exception_info['exception_message']}")
            if not check.success:
                failing[reason] = np.asarray(check.result["unexpected_index_list"], dtype=np.int64)
    return failing


def validate(raw: pd.DataFrame, policy: Policy, item_ids: list[str]) -> Outcome:
    """Split a raw batch into clean rows, quarantined rows (with reasons) and dropped exact duplicates."""
    missing = missing_columns(raw)
    if missing:
        raise InputError(f"missing required column(s): {', '.join(missing)}")
    rows_in = len(raw)
    frame = sanitize(raw, policy)
    frame["source_row"] = np.arange(rows_in, dtype=np.int64)
    duplicate = frame.drop(columns="source_row").duplicated(keep="first").to_numpy()
    frame = frame[~duplicate].reset_index(drop=True)
    frame[CATALOGUE] = frame["item_id"].where(frame["item_id"].isin(pd.Index(item_ids)))

    per_row: list[list[str]] = [[] for _ in range(len(frame))]
    counts: Counter[str] = Counter()
    for reason, rows in failing_rows(frame.drop(columns="source_row"), build_suite(policy)).items():
        counts[reason] = len(rows)
        for row in rows:
            per_row[row].append(reason)
    bad = np.fromiter((bool(r) for r in per_row), dtype=bool, count=len(per_row))

    quarantine = frame[bad].copy()
    quarantine["reasons"] = [r for r in per_row if r]
    quarantine = quarantine.drop(columns=["event_time", "rating", CATALOGUE]).rename(
        columns={RAW_TIME: "event_time", RAW_RATING: "rating"}
    )
    for column in quarantine.columns.difference(["reasons", "source_row"]):
        quarantine[column] = quarantine[column].astype("string")
    clean = frame[~bad].drop(columns=[RAW_TIME, RAW_RATING, CATALOGUE])
    clean = clean[[*INTERACTION_COLUMNS, *clean.columns.difference([*INTERACTION_COLUMNS, "source_row"]), "source_row"]]
    clean["user_id"] = clean["user_id"].astype(str)
    clean["item_id"] = clean["item_id"].astype(str)
    return Outcome(
        rows_in=rows_in,
        clean=clean.reset_index(drop=True),
        quarantine=quarantine.reset_index(drop=True),
        duplicates_dropped=int(duplicate.sum()),
        reasons=dict(sorted(counts.items())),
    )
