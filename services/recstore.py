"""The one SQL adapter for recommendations: runs, per-user results, ranked rows and the published view.

Switch pattern (architecture.md): a run writes its rows under its own ``run_id`` while the published run stays
live; ``publish`` checks the new run and flips both statuses in one transaction, so readers see the old run or
the new one, never a mix. Superseded runs keep their rows (rollback, audit).

Contract for downstream apps: the view ``recommendations_current``, one row per (user, rank) of the published
run, with columns run_id, model_name, model_version, published_at, user_id, rank (1 = best), item_id, title,
score, rationale, generated_at. On PostgreSQL the migration creates the login role ``recstore_reader_role``
(default ``r2ec_reader``, no password: set one with ``ALTER ROLE``) that may SELECT this view and nothing else.

Embedded default: ``sqlite:///<state>/recs.db`` in WAL mode (a reader never waits for the writer); production:
PostgreSQL (``postgresql+psycopg://…``). The schema is Alembic's (``services/migrations``, ``RecStore.upgrade``);
all text reaches SQL as bound parameters and is stored verbatim.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from services.settings import Settings

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "recstore_alembic_version"  # not alembic_version: the database may also hold MLflow or Airflow
MIGRATION_LOCK = 7_230_411  # PostgreSQL advisory lock: shard workers starting at once migrate one at a time
SQLITE_BUSY_TIMEOUT_S = 60.0
EXAMPLES = 5  # ids quoted per problem of check_run

RUNNING, FAILED, PUBLISHED, SUPERSEDED = "running", "failed", "published", "superseded"
SCORED, NO_HISTORY, UNKNOWN_USER = "scored", "no_history", "unknown_user"  # the migration's CHECK allows these


def utc(value: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores no time zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else utc(value)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else utc(value)


metadata = sa.MetaData()
runs = sa.Table(
    "recommendation_runs",
    metadata,
    sa.Column("run_id", sa.String(128), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("item_collection", sa.String(256), nullable=False),
    sa.Column("feature_snapshot", UTCDateTime, nullable=False),
    sa.Column("top_k", sa.Integer, nullable=False),
    sa.Column("n_shards", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("published_at", UTCDateTime),
    sa.Column("users_scored", sa.Integer),
    sa.Column("users_skipped", sa.Integer),
    sa.Column("rows", sa.Integer),
    sa.Column("errors", sa.Text),
    sa.Column("summary", sa.JSON),
    sa.Index(
        "uq_runs_one_published",
        "status",
        unique=True,
        sqlite_where=sa.text("status = 'published'"),
        postgresql_where=sa.text("status = 'published'"),
    ),
)
users = sa.Table(
    "recommendation_users",
    metadata,
    sa.Column("run_id", sa.String(128), sa.ForeignKey("recommendation_runs.run_id"), primary_key=True),
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("shard", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("history", sa.JSON, nullable=False),
    sa.Column("rationale", sa.Text, nullable=False),
    sa.Column("stopped", sa.Boolean, nullable=False),
    sa.Column("fluency", sa.Double),
    sa.Column("generated_at", UTCDateTime, nullable=False),
)
recs = sa.Table(
    "recommendations",
    metadata,
    sa.Column("run_id", sa.String(128), primary_key=True),
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("rank", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.String(256), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("score", sa.Double),  # NULL only where SQLite was handed a NaN; check_run refuses it
    sa.Column("rationale", sa.Text, nullable=False),
    sa.Column("generated_at", UTCDateTime, nullable=False),
    sa.ForeignKeyConstraint(["run_id", "user_id"], ["recommendation_users.run_id", "recommendation_users.user_id"]),
    sa.UniqueConstraint("run_id", "user_id", "item_id", name="uq_recommendations_item"),
    sa.Index("ix_recommendations_user_run", "user_id", "run_id"),
)

deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("event", sa.String(128), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class RankedItem:
    """One recommended item of a user, rank 1 first."""

    rank: int
    item_id: str
    title: str
    score: float


@dataclass(frozen=True)
class UserResult:
    """What the nightly job made of one user: status, the history the model saw, rationale and ranked items."""

    user_id: str
    status: str  # SCORED | NO_HISTORY | UNKNOWN_USER
    history: list[dict[str, str]]  # [{"item_id": ..., "title": ...}], oldest first
    rationale: str  # "" when not scored
    items: list[RankedItem]  # empty when not scored
    detail: str = ""
    stopped: bool = False  # the rationale ended by itself (not cut at the token budget)
    fluency: float | None = None  # the backbone's log-likelihood of the rationale, for a sample of users


class RunAlreadyPublished(Exception):
    """The run id was published (or published and superseded): its rows are final, use a new run id."""


class RunCheckFailed(Exception):
    """``publish`` refused a run; the message lists every problem ``check_run`` found."""


def _json(value: Any) -> str:
    return json.dumps(value, default=str)  # a summary may hold datetimes or paths


def _sqlite_transactions(engine: sa.Engine, read_only: bool) -> None:
    """SQLAlchemy's recipe for real SQLite transactions (pysqlite leaves SELECTs outside them).

    A writer begins IMMEDIATE, so it waits its turn (busy timeout) instead of failing on a stale snapshot; WAL
    lets readers read the last committed state meanwhile.
    """

    @sa.event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", *(["query_only=ON"] if read_only else [])):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @sa.event.listens_for(engine, "begin")
    def begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _examples(ids: Iterable[str]) -> str:
    ordered = sorted(ids)
    more = f" and {len(ordered) - EXAMPLES} more" if len(ordered) > EXAMPLES else ""
    return ", ".join(map(repr, ordered[:EXAMPLES])) + more


class RecStore:
    """Recommendation runs in one SQL database; ``read_only`` for the read API (no write can slip through)."""

    def __init__(self, url: str, *, read_only: bool = False, reader_role: str = "r2ec_reader") -> None:
        self.url = sa.make_url(url)
        self.reader_role = reader_role
        if self.url.get_backend_name() == "sqlite":
            if self.url.database not in (None, "", ":memory:") and not read_only:
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(
                self.url, json_serializer=_json, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}
            )
            _sqlite_transactions(self.engine, read_only)
        else:
            self.engine = sa.create_engine(self.url, json_serializer=_json, pool_pre_ping=True)
            if read_only:
                self.engine = self.engine.execution_options(postgresql_readonly=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> RecStore:
        """The writer's store (the nightly job)."""
        return cls(settings.recstore_uri, reader_role=settings.recstore_reader_role)

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (``alembic upgrade head``); a no-op when it is there."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["reader_role"] = self.reader_role
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def start_run(
        self,
        run_id: str,
        *,
        model_name: str,
        model_version: str,
        item_collection: str,
        feature_snapshot: datetime,
        top_k: int,
        n_shards: int,
    ) -> dict[str, Any]:
        """Create the run, or re-open a running or failed one (resume). Returns the run's row.

        Re-opened with other parameters (say the champion moved between two attempts), it drops the rows
        written so far: one run never mixes two models or two snapshots.
        """
        params = {
            "model_name": model_name,
            "model_version": str(model_version),
            "item_collection": item_collection,
            "feature_snapshot": utc(feature_snapshot),
            "top_k": top_k,
            "n_shards": n_shards,
        }
        with self.engine.begin() as conn:
            row = self._run(conn, run_id, lock=True)
            if row is None:
                conn.execute(
                    runs.insert().values(run_id=run_id, status=RUNNING, started_at=datetime.now(UTC), **params)
                )
            elif row["status"] in (PUBLISHED, SUPERSEDED):
                raise RunAlreadyPublished(f"run {run_id!r} is {row['status']}; its rows are final, use a new run id")
            else:
                if any(row[key] != value for key, value in params.items()):
                    conn.execute(recs.delete().where(recs.c.run_id == run_id))
                    conn.execute(users.delete().where(users.c.run_id == run_id))
                update = runs.update().where(runs.c.run_id == run_id)
                conn.execute(update.values(status=RUNNING, errors=None, finished_at=None, **params))
            return self._run(conn, run_id)

    def done_users(self, run_id: str) -> set[str]:
        """Users already written for this run: a resumed run skips them."""
        with self.engine.connect() as conn:
            return set(conn.scalars(sa.select(users.c.user_id).where(users.c.run_id == run_id)))

    def write_users(self, run_id: str, shard: int, results: list[UserResult], generated_at: datetime) -> None:
        """Replace these users' rows of a running run, in one transaction: a retried chunk never duplicates."""
        ids = [result.user_id for result in results]
        with self.engine.begin() as conn:
            status = conn.scalar(sa.select(runs.c.status).where(runs.c.run_id == run_id).with_for_update(read=True))
            if status != RUNNING:
                raise ValueError(f"run {run_id!r} is {status or 'missing'}, not running: start_run it first")
            conn.execute(recs.delete().where(recs.c.run_id == run_id, recs.c.user_id.in_(ids)))
            conn.execute(users.delete().where(users.c.run_id == run_id, users.c.user_id.in_(ids)))
            if not results:
                return
            at = utc(generated_at)
            user_rows = [
                {
                    "run_id": run_id,
                    "user_id": r.user_id,
                    "shard": shard,
                    "status": r.status,
                    "detail": r.detail,
                    "history": r.history,
                    "rationale": r.rationale,
                    "stopped": r.stopped,
                    "fluency": r.fluency,
                    "generated_at": at,
                }
                for r in results
            ]
            conn.execute(users.insert(), user_rows)
            item_rows = [
                {
                    "run_id": run_id,
                    "user_id": r.user_id,
                    "rank": item.rank,
                    "item_id": item.item_id,
                    "title": item.title,
                    "score": item.score,
                    "rationale": r.rationale,
                    "generated_at": at,
                }
                for r in results
                for item in r.items
            ]
            if item_rows:
                conn.execute(recs.insert(), item_rows)

    def run_users(self, run_id: str) -> list[dict[str, Any]]:
        """Every user row of a run, by user id (the job measures the rationales before it publishes)."""
        with self.engine.connect() as conn:
            select = sa.select(users).where(users.c.run_id == run_id).order_by(users.c.user_id)
            return [dict(row) for row in conn.execute(select).mappings()]

    def check_run(self, run_id: str, expected_users: set[str] | None = None) -> list[str]:
        """Problems that forbid publishing (empty = ok): missing, extra or incomplete users, bad scores."""
        with self.engine.connect() as conn:
            return self._problems(conn, run_id, expected_users)

    def publish(self, run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Check the run, then make it the published one and supersede the previous, in one transaction.

        Raises :class:`RunCheckFailed` (nothing changes) when a check fails; publishing the published run again
        returns its row unchanged.
        """
        with self.engine.begin() as conn:
            row = self._run(conn, run_id, lock=True)
            if row is not None and row["status"] == PUBLISHED:
                return row
            problems = self._problems(conn, run_id, None)
            if problems:
                raise RunCheckFailed(f"run {run_id!r} not published: " + "; ".join(problems))
            scored = sa.func.count().filter(users.c.status == SCORED)
            n_scored, n_users = conn.execute(sa.select(scored, sa.func.count()).where(users.c.run_id == run_id)).one()
            n_rows = conn.scalar(sa.select(sa.func.count()).where(recs.c.run_id == run_id))
            now = datetime.now(UTC)
            conn.execute(runs.update().where(runs.c.status == PUBLISHED).values(status=SUPERSEDED))
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(
                    status=PUBLISHED,
                    finished_at=now,
                    published_at=now,
                    users_scored=n_scored,
                    users_skipped=n_users - n_scored,
                    rows=n_rows,
                    errors=None,
                    summary=summary,
                )
            )
            return self._run(conn, run_id)

    def fail_run(self, run_id: str, error: str) -> None:
        """Record why a run stopped; a published (or superseded) run is left as it is."""
        with self.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id, runs.c.status.in_([RUNNING, FAILED]))
                .values(status=FAILED, errors=error, finished_at=datetime.now(UTC))
            )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            return self._run(conn, run_id)

    def current_run(self) -> dict[str, Any] | None:
        """The published run's row, or None before the first publish."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.status == PUBLISHED)).mappings().first()
            return None if row is None else dict(row)

    def user_recommendations(self, user_id: str) -> dict[str, Any] | None:
        """One user's result in the published run; None for a user the run does not hold (or no run yet).

        Every read is keyed by the run id found first, and published rows never change, so a publish in
        between cannot mix two runs.
        """
        run = self.current_run()
        if run is None:
            return None
        with self.engine.connect() as conn:
            key = (users.c.run_id == run["run_id"], users.c.user_id == user_id)
            user = conn.execute(sa.select(users).where(*key)).mappings().first()
            if user is None:
                return None
            items = conn.execute(
                sa.select(recs.c.rank, recs.c.item_id, recs.c.title, recs.c.score)
                .where(recs.c.run_id == run["run_id"], recs.c.user_id == user_id)
                .order_by(recs.c.rank)
            ).mappings()
            return {
                "run_id": run["run_id"],
                "model_name": run["model_name"],
                "model_version": run["model_version"],
                "published_at": run["published_at"],
                "user_id": user_id,
                "generated_at": user["generated_at"],
                "status": user["status"],
                "detail": user["detail"],
                "history": user["history"],
                "rationale": user["rationale"],
                "items": [dict(item) for item in items],
            }

    def list_users(self, limit: int = 100, offset: int = 0, query: str = "") -> list[str]:
        """User ids of the published run, sorted, optionally those containing ``query`` (any case)."""
        run = self.current_run()
        if run is None:
            return []
        select = sa.select(users.c.user_id).where(users.c.run_id == run["run_id"])
        if query:
            select = select.where(users.c.user_id.icontains(query, autoescape=True))
        with self.engine.connect() as conn:
            return list(conn.scalars(select.order_by(users.c.user_id).limit(limit).offset(offset)))

    # --- webhook deliveries (services.hooks) ---------------------------------------------------------------------

    def claim_delivery(self, delivery_id: str, event: str, received_at: datetime) -> bool:
        """Record a verified webhook delivery; False when its id was recorded before (a replay).

        The primary key decides, so two receivers handed the same delivery at once cannot both act on it.
        """
        row = {"delivery_id": delivery_id, "event": event, "received_at": received_at, "outcome": "received"}
        try:
            with self.engine.begin() as conn:
                conn.execute(deliveries.insert().values(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def settle_delivery(self, delivery_id: str, outcome: str | None) -> None:
        """Note what a claimed delivery did, or with ``None`` forget it (it failed; a redelivery may act)."""
        with self.engine.begin() as conn:
            where = deliveries.c.delivery_id == delivery_id
            if outcome is None:
                conn.execute(deliveries.delete().where(where))
            else:
                conn.execute(deliveries.update().where(where).values(outcome=outcome))

    def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(deliveries).where(deliveries.c.delivery_id == delivery_id)).mappings().first()
        return dict(row) if row else None

    @staticmethod
    def _run(conn: sa.Connection, run_id: str, lock: bool = False) -> dict[str, Any] | None:
        select = sa.select(runs).where(runs.c.run_id == run_id)
        row = conn.execute(select.with_for_update() if lock else select).mappings().first()
        return None if row is None else dict(row)

    def _problems(self, conn: sa.Connection, run_id: str, expected: set[str] | None) -> list[str]:
        run = self._run(conn, run_id)
        if run is None:
            return [f"run {run_id!r} does not exist"]
        top_k = run["top_k"]
        problems = [] if run["status"] == RUNNING else [f"run is {run['status']}, not running"]
        counts = (
            sa.select(
                recs.c.user_id,
                sa.func.count().label("n"),
                sa.func.min(recs.c.rank).label("lo"),
                sa.func.max(recs.c.rank).label("hi"),
            )
            .where(recs.c.run_id == run_id)
            .group_by(recs.c.user_id)
            .subquery()
        )
        rows = conn.execute(
            sa.select(users.c.user_id, users.c.status, counts.c.n, counts.c.lo, counts.c.hi)
            .outerjoin(counts, counts.c.user_id == users.c.user_id)
            .where(users.c.run_id == run_id)
        ).all()
        present = {row.user_id for row in rows}
        if not present:
            problems.append("run has no users")
        complete = (top_k, 1, top_k)  # count, lowest and highest rank (ranks are unique: the primary key)
        if wrong := {row.user_id for row in rows if row.status == SCORED and (row.n, row.lo, row.hi) != complete}:
            problems.append(
                f"{len(wrong)} scored users lack exactly {top_k} items ranked 1..{top_k}: {_examples(wrong)}"
            )
        if extra := {row.user_id for row in rows if row.status != SCORED and row.n}:
            problems.append(f"{len(extra)} users not scored but with items: {_examples(extra)}")
        limit = sys.float_info.max  # NaN sorts above it on PostgreSQL; SQLite stores NaN as NULL
        bad_score = sa.or_(recs.c.score.is_(None), recs.c.score > limit, recs.c.score < -limit)
        if nan := set(conn.scalars(sa.select(recs.c.user_id).where(recs.c.run_id == run_id, bad_score).distinct())):
            problems.append(f"{len(nan)} users with a missing or infinite score: {_examples(nan)}")
        if expected is not None:
            if missing := expected - present:
                problems.append(f"{len(missing)} expected users missing: {_examples(missing)}")
            if unexpected := present - expected:
                problems.append(f"{len(unexpected)} users not expected: {_examples(unexpected)}")
        return problems
