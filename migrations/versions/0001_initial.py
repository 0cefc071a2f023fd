"""Initial schema: items, models, indexes, jobs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from app code: a migration must keep meaning
# what it meant when it was written, whatever the models become.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", PK, primary_key=True, autoincrement=True)


def _created_at() -> sa.Column:
    return sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False)


def _one_of(column: str, *values: str) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=f"{column}_valid")


def _active_where() -> dict[str, sa.TextClause]:
    return {
        "postgresql_where": sa.text("status = 'active'"),
        "sqlite_where": sa.text("status = 'active'"),
    }


def upgrade() -> None:
    op.create_table(
        "items",
        _id(),
        sa.Column("external_id", sa.String(1024), nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("image_path", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("metadata", JSON),
        _created_at(),
        sa.Column("deleted_at", TS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("external_id", name=op.f("uq_items_external_id")),
    )

    op.create_table(
        "models",
        _id(),
        sa.Column("name", sa.String(255)),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("checkpoint_path", sa.Text),
        sa.Column("parent_id", PK),
        sa.Column("status", sa.String(16), server_default="candidate", nullable=False),
        sa.Column("eval_report", JSON),
        _created_at(),
        sa.Column("promoted_at", TS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.ForeignKeyConstraint(["parent_id"], ["models.id"], name=op.f("fk_models_parent_id_models")),
        _one_of("status", "candidate", "active", "retired"),
    )
    op.create_index("uq_models_one_active", "models", ["status"], unique=True, **_active_where())

    op.create_table(
        "indexes",
        _id(),
        sa.Column("model_id", PK, nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("factory", sa.String(255), nullable=False),
        sa.Column("metric", sa.String(16), server_default="ip", nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("ntotal", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), server_default="building", nullable=False),
        sa.Column("params", JSON),
        sa.Column("stats", JSON),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_indexes")),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_indexes_model_id_models")),
        _one_of("modality", "image", "text"),
        _one_of("status", "building", "active", "retired"),
    )
    op.create_index("ix_indexes_model_id_modality_status", "indexes", ["model_id", "modality", "status"])
    op.create_index("uq_indexes_one_active", "indexes", ["model_id", "modality"], unique=True, **_active_where())

    op.create_table(
        "jobs",
        _id(),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), server_default="queued", nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("progress", sa.Float, server_default="0", nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("result", JSON),
        sa.Column("error", sa.Text),
        sa.Column("worker_id", sa.String(255)),
        sa.Column("heartbeat_at", TS),
        _created_at(),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        _one_of("status", "queued", "running", "succeeded", "failed", "cancelled"),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("indexes")
    op.drop_table("models")
    op.drop_table("items")
