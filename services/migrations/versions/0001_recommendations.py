"""Recommendation runs, per-user results, ranked rows, the published view and its read-only role.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

VIEW = """
CREATE VIEW recommendations_current AS
SELECT r.run_id, runs.model_name, runs.model_version, runs.published_at,
       r.user_id, r.rank, r.item_id, r.title, r.score, r.rationale, r.generated_at
FROM recommendations r JOIN recommendation_runs runs ON runs.run_id = r.run_id
WHERE runs.status = 'published'
"""


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "recommendation_runs",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("item_collection", sa.String(256), nullable=False),
        sa.Column("feature_snapshot", when, nullable=False),
        sa.Column("top_k", sa.Integer, nullable=False),
        sa.Column("n_shards", sa.Integer, nullable=False),
        sa.Column("started_at", when, nullable=False),
        sa.Column("finished_at", when),
        sa.Column("published_at", when),
        sa.Column("users_scored", sa.Integer),
        sa.Column("users_skipped", sa.Integer),
        sa.Column("rows", sa.Integer),
        sa.Column("errors", sa.Text),
        sa.Column("summary", sa.JSON),
        sa.CheckConstraint("status IN ('running', 'failed', 'published', 'superseded')", name="ck_runs_status"),
    )
    # at most one published run: the switch of the whole service is this one row
    op.create_index(
        "uq_runs_one_published",
        "recommendation_runs",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'published'"),
        postgresql_where=sa.text("status = 'published'"),
    )
    op.create_table(
        "recommendation_users",
        sa.Column("run_id", sa.String(128), sa.ForeignKey("recommendation_runs.run_id"), primary_key=True),
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("stopped", sa.Boolean, nullable=False),
        sa.Column("fluency", sa.Double),
        sa.Column("generated_at", when, nullable=False),
        sa.CheckConstraint("status IN ('scored', 'no_history', 'unknown_user')", name="ck_users_status"),
    )
    op.create_table(
        "recommendations",
        sa.Column("run_id", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("rank", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.String(256), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("score", sa.Double),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("generated_at", when, nullable=False),
        sa.ForeignKeyConstraint(["run_id", "user_id"], ["recommendation_users.run_id", "recommendation_users.user_id"]),
        sa.UniqueConstraint("run_id", "user_id", "item_id", name="uq_recommendations_item"),
    )
    op.create_index("ix_recommendations_user_run", "recommendations", ["user_id", "run_id"])
    op.execute(VIEW)
    if op.get_bind().dialect.name == "postgresql":
        grant_reader(context.config.attributes["reader_role"])


def grant_reader(name: str) -> None:
    """The downstream apps' login role: the view, nothing else.

    Roles are cluster-wide, so another database may have made it already; creating it needs CREATEROLE.
    """
    bind = op.get_bind()
    role = bind.dialect.identifier_preparer.quote(name)
    if not bind.scalar(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name}):
        op.execute(  # a concurrent migration of another database may create it in between
            f"DO $$ BEGIN CREATE ROLE {role} LOGIN; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
    if not bind.scalar(sa.text("SELECT has_schema_privilege(:name, current_schema(), 'USAGE')"), {"name": name}):
        schema = bind.dialect.identifier_preparer.quote(bind.scalar(sa.text("SELECT current_schema()")))
        op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    op.execute(f"GRANT SELECT ON recommendations_current TO {role}")


def downgrade() -> None:
    op.execute("DROP VIEW recommendations_current")
    op.drop_table("recommendations")
    op.drop_table("recommendation_users")
    op.drop_table("recommendation_runs")
