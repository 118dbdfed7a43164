"""The one adapter to Feast: configuration, apply, source tables, materialization and point-in-time reads.

The definitions live in ``feature_repo/`` (parsed with Feast's own ``parse_repo``); the configuration is the
committed ``feature_repo/feature_store.yaml`` with paths resolved under ``<state>/feast`` (embedded world), or
its registry, offline and online sections replaced by PostgreSQL from the settings (production world). The
resolved file is written to ``<state>/feast/feature_store.yaml`` so the ``feast`` CLI sees the same store.

Point in time. Events are ordered per user by (event time, log order). Each event gets a *sequence timestamp*:
its event time in microseconds (Feast's resolution), pushed forward by the fewest microseconds that make it
later than the user's previous event, so ties in time keep the log's order. The ``user_history`` row of an event
holds the last N items up to and including it, stamped with that sequence timestamp, which is never earlier
than the event time. Hence a read as of ``T - 1µs`` sees only events before ``T``; a training target reads as of
its own sequence timestamp minus 1µs and sees exactly the events before it in that order, which is what
``r2ec.data.samples.build_samples`` uses.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from r2ec.data.samples import PreparedData, Samples, catalogue_index, split_samples
from r2ec.inference import samples_from_histories
from services.lake import strip_controls
from services.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
ONE_US = np.timedelta64(1, "us")
HISTORY_FEATURES = ("history_item_ids", "history_ratings", "history_times", "history_length")
ITEM_FEATURES = ("title", "genres", "year", "description")
TRAINING_SERVICE, SCORING_SERVICE = "r2ec_training", "r2ec_scoring"
PG_TYPES = {  # arrow type of a source column -> PostgreSQL column type (production source tables)
    "string": "text",
    "large_string": "text",
    "int64": "bigint",
    "timestamp[us, tz=UTC]": "timestamptz",
    "list<item: string>": "text[]",
    "list<item: float>": "real[]",
    "list<item: int64>": "bigint[]",
}


def feast_dir(settings: Settings) -> Path:
    """State folder of the embedded Feast world: registry, online store and source tables."""
    return settings.root / "feast"


# ------------------------------------------------------------------------------------------ configuration


def _postgres(settings: Settings) -> dict[str, Any]:
    """Feast's PostgreSQL connection fields from the one URL in the settings."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.feast_postgres_url)
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "database": url.database or "postgres",
        "user": url.username or "postgres",
        "password": url.password or "",
        "sslmode": url.query.get("sslmode", "disable"),
    }


def repo_config(settings: Settings) -> RepoConfig:
    """The store's configuration for the world the settings choose; nothing is edited by hand."""
    import yaml
    from feast import RepoConfig
    from sqlalchemy.engine import make_url

    home = feast_dir(settings)
    raw = yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())
    raw["project"] = settings.feast_project
    if settings.feast_world == "embedded":
        raw["registry"]["path"] = f"sqlite:///{home / 'registry.db'}"
        raw["online_store"]["path"] = str(home / "online.db")
    else:
        pg = _postgres(settings)
        url = make_url(settings.feast_postgres_url).set(drivername="postgresql+psycopg")
        raw["registry"]["path"] = url.render_as_string(hide_password=False)
        raw["offline_store"] = {"type": "postgres", **pg}
        raw["online_store"] = {"type": "postgres", **pg}
    return RepoConfig(repo_path=home, **raw)


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore on the configured world; also writes the resolved ``feature_store.yaml`` beside its state."""
    from feast import FeatureStore

    config = repo_config(settings)
    home = feast_dir(settings)
    (home / "data").mkdir(parents=True, exist_ok=True)
    config.write_to_path(home)
    return FeatureStore(repo_path=str(home), config=config)


def definitions(settings: Settings) -> list[Any]:
    """Every object of ``feature_repo/``, with each batch source bound to the configured world."""
    from feast.repo_operations import parse_repo

    if str(FEATURE_REPO) not in sys.path:
        sys.path.insert(0, str(FEATURE_REPO))
    with contextlib.chdir(FEATURE_REPO):  # parse_repo names modules relative to the working directory
        repo = parse_repo(FEATURE_REPO)
    bound = {source.name: _bind(settings, source) for source in repo.data_sources}
    views = [copy.copy(view) for view in repo.feature_views]  # the parsed modules stay untouched
    for view in views:
        view.batch_source = bound[view.batch_source.name]
    return [*repo.entities, *bound.values(), *views, *repo.feature_services]


def _bind(settings: Settings, source: Any) -> Any:
    """A source of the repo in the configured world: its file under the state folder, or a PostgreSQL table."""
    common = {
        "name": source.name,
        "timestamp_field": source.timestamp_field,
        "description": source.description,
        "owner": source.owner,
        "tags": source.tags,
    }
    if settings.feast_world == "embedded":
        from feast import FileSource

        return FileSource(path=str(feast_dir(settings) / source.path), **common)
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

    return PostgreSQLSource(table=f"{settings.feast_project}_{source.name}", **common)


# ------------------------------------------------------------------------------------------ source tables


def ordered_log(log: pd.DataFrame) -> pd.DataFrame:
    """The log sorted by (user, event time, log order) with each row's sequence timestamp and log position."""
    order = np.lexsort((np.arange(len(log)), log["event_time"].to_numpy(), log["user_id"].to_numpy()))
    out = log.iloc[order].reset_index(drop=True)
    out["log_row"] = order
    users = out["user_id"].to_numpy()
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    position = np.arange(len(out)) - np.repeat(starts, np.diff(np.r_[starts, len(out)]))
    micros = out["event_time"].dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype(np.int64)
    # s_i = max(t_i, s_{i-1} + 1) per user, i.e. s_i = p_i + running max of (t - p) within the user
    lifted = pd.Series(micros - position).groupby(starts.repeat(np.diff(np.r_[starts, len(out)]))).cummax()
    out["sequence_us"] = lifted.to_numpy() + position
    out["position"] = position
    return out


def history_table(log: pd.DataFrame, max_history: int) -> pa.Table:
    """One row per event: the user's last ``max_history`` items up to and including it, oldest first."""
    ordered = ordered_log(log)
    n = len(ordered)
    length = np.minimum(ordered["position"].to_numpy() + 1, max_history)
    offsets = np.r_[0, np.cumsum(length)].astype(np.int32)
    flat = np.repeat(np.arange(n) - length + 1, length) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], length))
    seconds = ordered["event_time"].dt.tz_convert(None).to_numpy().astype("datetime64[s]").astype(np.int64)
    return pa.table(
        {
            "user_id": pa.array(ordered["user_id"].to_numpy(), pa.string()),
            "event_timestamp": pa.array(ordered["sequence_us"].to_numpy(), pa.timestamp("us", tz="UTC")),
            "history_item_ids": pa.ListArray.from_arrays(
                offsets, pa.array(ordered["item_id"].to_numpy()[flat], pa.string())
            ),
            "history_ratings": pa.ListArray.from_arrays(
                offsets, pa.array(ordered["rating"].to_numpy(dtype=np.float32)[flat], pa.float32())
            ),
            "history_times": pa.ListArray.from_arrays(offsets, pa.array(seconds[flat], pa.int64())),
            "history_length": pa.array(length.astype(np.int64), pa.int64()),
        }
    )


def item_table(items: pd.DataFrame, valid_from: datetime, text_max_chars: int) -> pa.Table:
    """The catalogue as feature rows valid from ``valid_from``; text stripped of control characters, capped."""

    def text(column: str) -> pa.Array:
        values = items[column] if column in items.columns else pd.Series([""] * len(items))
        cleaned = strip_controls(values.fillna("").astype("string")).str.slice(0, text_max_chars)
        return pa.array(cleaned.to_numpy(dtype=object), pa.string())

    year = pd.to_numeric(items["year"], errors="coerce") if "year" in items.columns else pd.Series([None] * len(items))
    return pa.table(
        {
            "item_id": pa.array(items["item_id"].astype(str).to_numpy(), pa.string()),
            "event_timestamp": pa.array([pd.Timestamp(valid_from)] * len(items), pa.timestamp("us", tz="UTC")),
            **{column: text(column) for column in ("title", "genres", "description")},
            "year": pa.array(year.astype("Int64").to_numpy(dtype=object, na_value=None), pa.int64()),
        }
    )


def write_sources(settings: Settings, log: pd.DataFrame, items: pd.DataFrame) -> dict[str, int]:
    """Rewrite both source tables from the clean log and the catalogue (parquet files or PostgreSQL tables)."""
    tables = {
        "user_history_source": history_table(log, settings.max_history),
        "item_text_source": item_table(items, settings.catalogue_start, settings.text_max_chars),
    }
    sources = {d.name: d for d in definitions(settings) if d.name in tables}
    for name, table in tables.items():
        if settings.feast_world == "embedded":
            path = Path(sources[name].path)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path.with_name(f".{path.name}.tmp"))
            path.with_name(f".{path.name}.tmp").replace(path)
        else:
            _replace_pg_table(settings, sources[name].get_table_query_string(), table)
    return {name: table.num_rows for name, table in tables.items()}


def _replace_pg_table(settings: Settings, name: str, table: pa.Table) -> None:
    """Load a table into PostgreSQL beside the old one, then swap them in one transaction."""
    import psycopg
    from psycopg import sql

    pg = _postgres(settings)
    conninfo = psycopg.conninfo.make_conninfo(
        host=pg["host"], port=pg["port"], dbname=pg["database"], user=pg["user"], password=pg["password"]
    )
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(PG_TYPES[str(f.type)])) for f in table.schema
    )
    staging = sql.Identifier(f"{name}__new")
    with psycopg.connect(conninfo) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(staging, columns))
        names = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, names)) as copy_in:
            for row in zip(*(column.to_pylist() for column in table.columns), strict=True):
                copy_in.write_row(row)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(staging, sql.Identifier(name)))


# ---------------------------------------------------------------------------------------- store operations


def apply(settings: Settings, log: pd.DataFrame, items: pd.DataFrame) -> dict[str, Any]:
    """Register the definitions and (re)write the source tables they read."""
    store = feature_store(settings)
    rows = write_sources(settings, log, items)
    objects = definitions(settings)
    store.apply(objects)
    return {"world": settings.feast_world, "project": settings.feast_project, "objects": len(objects), "rows": rows}


def materialize(settings: Settings, end: datetime | None = None) -> dict[str, Any]:
    """Load new feature rows up to ``end`` into the online store.

    Incremental after the first run (Feast keeps the last end time per view); the first run starts at the
    catalogue's start, since a view's ttl is relative to ``end`` and would skip older history.
    """
    store = feature_store(settings)
    end = end or datetime.now(UTC)
    views = store.list_feature_views()
    fresh = [v.name for v in views if v.most_recent_end_time is None]
    if fresh:
        store.materialize(start_date=settings.catalogue_start, end_date=end, feature_views=fresh)
    known = [v.name for v in views if v.name not in fresh]
    if known:
        store.materialize_incremental(end_date=end, feature_views=known)
    return {"world": settings.feast_world, "end": end.isoformat(), "first_load": fresh, "incremental": known}


def training_frame(settings: Settings, log: pd.DataFrame, store: FeatureStore | None = None) -> pd.DataFrame:
    """Point-in-time training rows: per (user, next interaction), the history before it and the target's text.

    Rows come back in the order of ``build_samples`` (user, time, log order); ``log_row`` is the target's row.
    """
    store = store or feature_store(settings)
    ordered = ordered_log(log)
    targets = ordered[ordered["position"] >= 1]
    entity_df = pd.DataFrame(
        {
            "user_id": targets["user_id"].to_numpy(),
            "item_id": targets["item_id"].to_numpy(),
            "event_timestamp": pd.to_datetime(targets["sequence_us"].to_numpy() - 1, unit="us", utc=True),
            "target_time": targets["event_time"].to_numpy(),
            "log_row": targets["log_row"].to_numpy(),
            "sample": np.arange(len(targets)),
        }
    )
    service = store.get_feature_service(TRAINING_SERVICE)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    return frame.sort_values("sample", ignore_index=True)


def to_samples(frame: pd.DataFrame, item_index: dict[str, int], max_history: int) -> tuple[Samples, np.ndarray]:
    """Convert training rows to the model's ``Samples`` (catalogue indices, right-padded histories)."""
    histories = [pd.Series(list(ids), dtype=object).map(item_index) for ids in frame["history_item_ids"]]
    targets = frame["item_id"].map(item_index)
    if any(h.isna().any() for h in histories) or targets.isna().any():
        raise ValueError("training rows reference items outside the catalogue")
    target_times = pd.to_datetime(frame["target_time"], utc=True).dt.tz_convert(None).to_numpy()
    samples = samples_from_histories(
        user_ids=frame["user_id"].to_numpy(dtype=object).astype(str),
        histories=[h.to_numpy(dtype=np.int64) for h in histories],
        ratings=list(frame["history_ratings"]),
        times=list(frame["history_times"]),
        target_times=target_times.astype("datetime64[s]").astype(np.int64),
        max_history=max_history,
        targets=targets.to_numpy(dtype=np.int64),
    )
    return samples, frame["log_row"].to_numpy(dtype=np.int64)


def training_data(settings: Settings, name: str, log: pd.DataFrame, items: pd.DataFrame) -> PreparedData:
    """Every sample of the clean ``log`` read through the training feature service, split in time.

    The same samples, order and splits as ``r2ec.data.samples.prepare`` builds in memory from the same log
    (tested), but each history is what Feast serves as of its target: what retraining learns from is what the
    feature store holds, not a side copy of the log.
    """
    samples, source_row = to_samples(training_frame(settings, log), catalogue_index(items), settings.max_history)
    return split_samples(name, items, samples, source_row)


def scoring_features(settings: Settings, user_ids: list[str], run_time: datetime) -> pd.DataFrame:
    """Each user's history as of ``run_time`` (events strictly before it), in the order of ``user_ids``.

    Users without history get empty lists and length 0.
    """
    store = feature_store(settings)
    as_of = pd.Timestamp(run_time).tz_convert("UTC") - timedelta(microseconds=1)
    entity_df = pd.DataFrame({"user_id": user_ids, "event_timestamp": as_of, "request": np.arange(len(user_ids))})
    service = store.get_feature_service(SCORING_SERVICE)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    frame = frame.sort_values("request", ignore_index=True)
    known = frame["history_length"].notna()
    for name in HISTORY_FEATURES[:3]:
        frame[name] = [list(v) if ok else [] for v, ok in zip(frame[name], known, strict=True)]
    frame["history_length"] = frame["history_length"].fillna(0).astype(np.int64)
    return frame[["user_id", *HISTORY_FEATURES]]


def item_texts(settings: Settings, item_ids: list[str]) -> pd.DataFrame:
    """Title and attributes of items from the online store (run ``materialize`` first)."""
    store = feature_store(settings)
    rows = store.get_online_features(
        features=[f"item_text:{name}" for name in ITEM_FEATURES], entity_rows=[{"item_id": i} for i in item_ids]
    ).to_df()
    return rows[["item_id", *ITEM_FEATURES]]
