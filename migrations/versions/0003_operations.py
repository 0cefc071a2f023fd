"""Operations: jobs become a queue (attempts, cancel requests, progress details, a log tail,
who asked), and API keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, server_default="0", nullable=False))
        batch.add_column(sa.Column("max_attempts", sa.Integer, server_default="3", nullable=False))
        batch.add_column(sa.Column("cancel_requested_at", TS))
        batch.add_column(sa.Column("details", JSON))
        batch.add_column(sa.Column("log", JSON))
        batch.add_column(sa.Column("created_by", sa.String(255)))
    op.create_table(
        "api_keys",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", TS),
        sa.Column("last_used_at", TS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
        sa.CheckConstraint("role IN ('search', 'admin')", name="role_valid"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    with op.batch_alter_table("jobs") as batch:
        for column in ("created_by", "log", "details", "cancel_requested_at", "max_attempts", "attempts"):
            batch.drop_column(column)
