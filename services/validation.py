"""Validation of incoming interaction logs with Great Expectations 1.x (landing: ``services.lake``).

A batch (one file) goes through four steps:

1. **read** (CSV, parquet or JSON lines) — an unreadable file, a wrong encoding, a row with the wrong number of
   fields, a bare carriage return, a missing, duplicate or reserved column is an ``InputError``: one line, nothing
   written. In a CSV file only an empty field is missing (``NA``, ``null`` or ``nan`` are ids like any other);
2. **sanitize** in pandas: each value of the four log fields is turned into the text it stands for, never
   altered (integers and integral floats are ids: ``7`` -> ``"7"``; booleans, objects and arrays are kept only as
   text for the quarantine); times and ratings are parsed into typed columns beside that text; free-text columns
   lose control characters and are cut to ``text_max_chars`` (GE can only *flag* such values, we must *repair*
   them; an id is never repaired, it is rejected);
3. **validate** with the expectation suite of ``build_suite``, kept as code: each expectation carries its
   rejection reason in ``meta``, and ``result_format="COMPLETE"`` tells which rows failed it. Of the clean rows,
   a repeat of an earlier row's normalised event (user, item, UTC time, rating as a number) is a duplicate;
4. **land** (``services.lake``): clean rows as parquet partitions by day, rejected rows with the list of their
   reasons in the quarantine, then the batch's manifest. Above ``ingest_max_bad_fraction`` the batch is refused
   and nothing is written.

``rows_in = rows_clean + rows_quarantined + duplicates_dropped`` always holds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from r2ec.data.schema import INTERACTION_COLUMNS
from services.lake import CONTROL_CHARACTERS, LAKE_COLUMNS, strip_controls
from services.settings import Settings

if TYPE_CHECKING:
    import great_expectations as gx

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
ID_COLUMNS = ("user_id", "item_id")
RAW = {column: f"{column}_raw" for column in INTERACTION_COLUMNS}  # each field's value as text, as it came in
CATALOGUE = "catalogue_item_id"  # the row's item id as found in the catalogue, null when unknown
# Columns the service adds; an input column with one of these names would be overwritten, so the file is refused.
RESERVED_COLUMNS = (*LAKE_COLUMNS, *RAW.values(), CATALOGUE, "reasons")
# An id that contains these cannot be kept as written (it would print, compare or join as another id).
UNKEPT_ID = rf"{CONTROL_CHARACTERS}|^\s|\s$"
EXACT_FLOAT_INTEGER = 2**53  # a float id beyond this may not be the integer that was meant
OFFSET = r"[T ]\d{1,2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"  # an ISO time with a zone
NEWLINE = b"\n"
# GE's data contexts share serialization schemas: two validations at once in one process can crash each other
GE_LOCK = threading.Lock()
FAR_FUTURE, FAR_PAST = pd.Timestamp.max.tz_localize("UTC"), pd.Timestamp.min.tz_localize("UTC")


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
    seconds: dict[str, float] = field(default_factory=dict)  # where validation spent its time, by step

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
        if kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            data = path.read_bytes()
            if not data.strip():
                raise InputError("empty file, not even a header")
            data.decode("utf-8")  # the reader's own errors do not say where the bad byte is
            frame = read_csv(data) if kind == "csv" else read_jsonl(data)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise InputError(f"{path}: not UTF-8 text (byte {byte:#04x} at offset {error.start})") from None
    except Exception as error:  # each reader has its own error types; all mean "cannot read this file"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: unreadable {kind} file ({first_line})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    check_columns(frame, path)
    return frame.reset_index(drop=True)


def read_csv(data: bytes) -> pd.DataFrame:
    """Every cell as the string written (only an empty field is missing); a row whose field count differs from
    the header's, or a bare CR (which CSV readers take for a line end, splitting a row), makes the file unusable."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    unix = data.replace(b"\r\n", NEWLINE)
    bare_cr = unix.find(b"\r")
    if bare_cr >= 0:
        line = unix.count(NEWLINE, 0, bare_cr) + 1
        raise InputError(f"line {line} holds a bare carriage return (CR without LF), which splits its row")
    header = next(csv.reader([data.split(NEWLINE, 1)[0].decode("utf-8").rstrip("\r")]))
    invalid: list[Any] = []

    def refuse(row: Any) -> str:
        invalid.append(row)
        return "error"

    try:
        table = pa_csv.read_csv(
            io.BytesIO(data),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=refuse),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid:
        if not invalid:
            raise
        row = invalid[0]
        offset = data.find(row.text.encode("utf-8"))
        where = f"line {data.count(NEWLINE, 0, offset) + 1}" if offset >= 0 else "a row"
        raise InputError(
            f"{where} has {row.actual_columns} field(s) where the header has {row.expected_columns} "
            f"({row.text[:80]!r}); quote a field that holds a comma"
        ) from None
    return table.to_pandas()


def read_jsonl(data: bytes) -> pd.DataFrame:
    """One JSON object per line, values as JSON typed them (no date or number coercion)."""
    return pd.read_json(io.BytesIO(data), lines=True, dtype=False, convert_dates=False, precise_float=True)


def check_columns(raw: pd.DataFrame, path: Path) -> None:
    """Refuse a file whose header cannot be read as the log contract: missing, repeated or reserved columns."""
    repeated = sorted({c for c in raw.columns if list(raw.columns).count(c) > 1})
    if repeated:
        raise InputError(f"{path}: repeated column(s): {', '.join(repeated)}")
    reserved = [c for c in raw.columns if c in RESERVED_COLUMNS]
    if reserved:
        raise InputError(f"{path}: column(s) {', '.join(reserved)} are the service's own; rename them in the file")
    missing = missing_columns(raw)
    if missing:
        header = ",".join(raw.columns)
        hint = next((f"; the header looks {d!r}-delimited, not ','" for d in ";\t|" if header.count(d) >= 3), "")
        raise InputError(f"{path}: missing required column(s): {', '.join(missing)}{hint}")


def batch_id(path: Path) -> str:
    """Name of a batch: the hash of the file's bytes, so the same file is always the same batch."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- sanitize


def as_text(values: pd.Series, fractions: bool) -> tuple[pd.Series, pd.Series]:
    """Each value as the text it stands for, and where it may be used (a string or a number).

    Integers, and floats that hold an exact integer, read as that integer (``7`` and ``7.0`` -> ``"7"``); other
    floats are usable only when ``fractions`` (a rating, an epoch time; not an id). Booleans, objects and arrays
    are never usable: their text is kept for the quarantine. Missing (None, NaN, an empty string) is NA.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.astype("string"), pd.Series(False, index=values.index)
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        text = values.astype("string")
    elif pd.api.types.is_float_dtype(values):
        exact = values.eq(values.round()) & values.abs().le(EXACT_FLOAT_INTEGER)
        text = values.where(~exact).astype("string").fillna(values.where(exact).astype("Int64").astype("string"))
        return text, exact | values.isna() | fractions
    elif pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        text = values.astype("string")
    else:
        cells = [cell_text(value, fractions) for value in values]
        text = pd.Series([t for t, _ in cells], index=values.index, dtype="string")
        usable = pd.Series([u for _, u in cells], index=values.index, dtype=bool)
        return text.mask(text == ""), usable
    return text.mask(text == ""), pd.Series(True, index=values.index)


def cell_text(value: Any, fractions: bool) -> tuple[str | None, bool]:
    """``as_text`` for one value of a column of mixed types (JSON lines, object columns of parquet)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None, True
    if isinstance(value, bool | np.bool_):
        return json.dumps(bool(value)), False
    if isinstance(value, str):
        return value, True
    if isinstance(value, int | np.integer):
        return str(int(value)), True
    if isinstance(value, float | np.floating):
        exact = float(value).is_integer() and abs(value) <= EXACT_FLOAT_INTEGER
        return (str(int(value)), True) if exact else (repr(float(value)), fractions)
    if isinstance(value, pd.Timestamp | datetime):
        return str(value), True
    plain = value.tolist() if isinstance(value, np.ndarray) else value
    return json.dumps(plain, default=str, ensure_ascii=False), False


def sanitize(raw: pd.DataFrame, policy: Policy) -> pd.DataFrame:
    """The frame GE validates: each log field as text (``<field>_raw``, NA when missing) and as the value used.

    Ids are the text itself where usable (never altered), ``event_time`` is parsed to UTC (NaT when missing or
    unparseable), ``rating`` numeric (NaN likewise); free-text columns lose control characters and are capped.
    """
    out = pd.DataFrame(index=raw.index)
    for column in raw.columns.difference(INTERACTION_COLUMNS, sort=False):
        values = raw[column]
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            values = strip_controls(values.astype("string")).str.slice(0, policy.text_max_chars)
        out[column] = values
    for column in INTERACTION_COLUMNS:
        text, usable = as_text(raw[column], fractions=column not in ID_COLUMNS)
        out[RAW[column]] = text
        out[column] = text.where(usable)
    if pd.api.types.is_datetime64_any_dtype(raw["event_time"]):
        out["event_time"] = pd.to_datetime(raw["event_time"], utc=True)
    else:
        out["event_time"] = parse_event_times(out["event_time"].str.strip())
    out["rating"] = pd.to_numeric(out["rating"].str.strip(), errors="coerce").astype("float64")
    return out


def parse_event_times(text: pd.Series) -> pd.Series:
    """UTC timestamps from ISO-8601 strings (naive = UTC) or epoch seconds; NaT where impossible.

    A well-formed time beyond what a timestamp holds (year 2999, a huge epoch) becomes the largest (or smallest)
    timestamp, so it fails as "in the future" (or "before catalogue start"), not as unparseable.
    """
    epoch = pd.to_numeric(text, errors="coerce").astype("float64")
    epoch = epoch.where(np.isfinite(epoch))
    iso_text = text.mask(epoch.notna())
    zoned = iso_text.str.contains(OFFSET, regex=True).fillna(False).astype(bool)
    times = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    for part in (zoned, ~zoned):  # parsed apart: pandas reads naive times after a zoned one in that zone
        times[part] = pd.to_datetime(iso_text[part], utc=True, errors="coerce", format="ISO8601")
    limit = (FAR_FUTURE.timestamp(), FAR_PAST.timestamp())
    times = times.fillna(pd.to_datetime(epoch.where(epoch.between(limit[1], limit[0])), unit="s", utc=True))
    times[epoch > limit[0]] = FAR_FUTURE
    times[epoch < limit[1]] = FAR_PAST
    return times.fillna(out_of_range_years(iso_text.where(times.isna())))


def out_of_range_years(text: pd.Series) -> pd.Series:
    """FAR_FUTURE / FAR_PAST for ISO times whose year a timestamp cannot hold, NaT elsewhere: the same date in a
    year of the same 400-year calendar cycle must parse."""
    parts = text.str.extract(r"^([+-]?\d{4,})(-.*)$")
    year = pd.to_numeric(parts[0], errors="coerce")
    outside = year.notna() & ~year.between(FAR_PAST.year + 1, FAR_FUTURE.year - 1)
    same_cycle = (2000 + year[outside] % 400).astype("Int64").astype("string") + parts.loc[outside, 1]
    valid = pd.to_datetime(same_cycle, utc=True, errors="coerce", format="ISO8601").notna()
    result = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    late = valid.index[valid & (year[valid.index] >= FAR_FUTURE.year)]
    result[late] = FAR_FUTURE
    result[valid.index[valid].difference(late)] = FAR_PAST
    return result


# ----------------------------------------------------------------------------------------------- validate


def build_suite(policy: Policy) -> gx.ExpectationSuite:
    """The expectation suite for interaction logs; ``meta["reason"]`` is what a failing row is quarantined for.

    Row-level expectations only: each must yield ``unexpected_index_list``. A field is missing when its text
    (``<field>_raw``) is null; a value derived from the text (the usable id, the parsed time or rating, the
    catalogue's item) is checked only where the text exists, so each bad value gets one reason for one fault.

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

    def id_expectations(column: str) -> list[gx.expectations.Expectation]:
        return [
            E.ExpectColumnValuesToNotBeNull(column=RAW[column], meta={"reason": f"{column} missing"}),
            derived_not_null(column, RAW[column], f"{column} not a string or integer"),
            E.ExpectColumnValuesToNotMatchRegex(
                column=column,
                regex=UNKEPT_ID,
                meta={"reason": f"{column} has control, invisible or surrounding space characters"},
            ),
        ]

    expectations = [
        *id_expectations("user_id"),
        E.ExpectColumnValueLengthsToBeBetween(
            column="user_id", max_value=policy.id_max_chars, meta={"reason": "user_id too long"}
        ),
        *id_expectations("item_id"),
        derived_not_null(CATALOGUE, "item_id", "item_id unknown"),
        E.ExpectColumnValuesToNotBeNull(column=RAW["event_time"], meta={"reason": "event_time missing"}),
        derived_not_null("event_time", RAW["event_time"], "event_time unparseable"),
        E.ExpectColumnValuesToBeBetween(
            column="event_time", max_value=latest, meta={"reason": "event_time in the future"}
        ),
        E.ExpectColumnValuesToBeBetween(
            column="event_time", min_value=earliest, meta={"reason": "event_time before catalogue start"}
        ),
        derived_not_null("rating", RAW["rating"], "rating not a number"),
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

    suite = gx.ExpectationSuite(
        name="interaction_log_shape",
        expectations=[gx.expectations.ExpectColumnToExist(column=c) for c in INTERACTION_COLUMNS],
    )
    with GE_LOCK:
        context = _context()
        source = context.data_sources.add_pandas("header")
        batch = source.add_dataframe_asset("log").add_batch_definition_whole_dataframe("all")
        result = batch.get_batch(batch_parameters={"dataframe": raw.head(0)}).validate(suite)
    return [r.expectation_config.kwargs["column"] for r in result.results if not r.success]


def failing_rows(frame: pd.DataFrame, suite: gx.ExpectationSuite) -> dict[str, np.ndarray]:
    """Row positions that fail each reason, from one checkpoint run (``COMPLETE`` results)."""
    import great_expectations as gx

    with GE_LOCK:
        context = _context()
        source = context.data_sources.add_pandas("incoming")
        batch = source.add_dataframe_asset("log").add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(suite)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name="log", data=batch, suite=suite))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name="ingest", validation_definitions=[definition], result_format={"result_format": "COMPLETE"}
            )
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
    """Split a raw batch (``read_log``'s frame) into clean rows, quarantined rows (with reasons) and repeats of an
    earlier clean row's normalised event."""
    rows_in = len(raw)
    started = time.perf_counter()
    frame = sanitize(raw, policy)
    frame[CATALOGUE] = frame["item_id"].where(frame["item_id"].isin(pd.Index(item_ids)))
    seconds = {"sanitize": time.perf_counter() - started}

    started = time.perf_counter()
    failing = failing_rows(frame, build_suite(policy))
    seconds["expectations"] = time.perf_counter() - started

    started = time.perf_counter()
    reasons_of: defaultdict[int, list[str]] = defaultdict(list)
    for reason, rows in failing.items():
        for row in rows.tolist():
            reasons_of[row].append(reason)
    bad = np.zeros(rows_in, dtype=bool)
    bad[list(reasons_of)] = True
    frame["source_row"] = np.arange(rows_in, dtype=np.int64)

    quarantine = frame[bad].drop(columns=[*INTERACTION_COLUMNS, CATALOGUE])
    quarantine = quarantine.rename(columns={raw_name: column for column, raw_name in RAW.items()})
    quarantine["reasons"] = [reasons_of[row] for row in np.flatnonzero(bad).tolist()]
    quarantine = quarantine[[*INTERACTION_COLUMNS, *quarantine.columns.difference(INTERACTION_COLUMNS, sort=False)]]
    for column in quarantine.columns.difference(["reasons", "source_row"]):
        quarantine[column] = quarantine[column].astype("string")
    clean = frame[~bad].drop(columns=[*RAW.values(), CATALOGUE])
    clean = clean[[*INTERACTION_COLUMNS, *clean.columns.difference([*INTERACTION_COLUMNS, "source_row"]), "source_row"]]
    repeat = clean.duplicated(list(INTERACTION_COLUMNS), keep="first").to_numpy()
    clean = clean[~repeat].astype({"user_id": str, "item_id": str})
    seconds["verdict"] = time.perf_counter() - started
    return Outcome(
        rows_in=rows_in,
        clean=clean.reset_index(drop=True),
        quarantine=quarantine.reset_index(drop=True),
        duplicates_dropped=int(repeat.sum()),
        reasons={reason: len(rows) for reason, rows in sorted(failing.items())},
        seconds={step: round(value, 3) for step, value in seconds.items()},
    )
