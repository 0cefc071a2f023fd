"""Indexes store their kind (the ladder rung they were built as) instead of leaving readers to parse the factory.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Existing rows: the factory strings the ladder wrote before the kind was stored (a one-time derivation).
_KIND_FROM_FACTORY = (
    ("%HNSW%", "hnsw"),
    ("%PQ%", "ivf_pq"),
    ("%SQ8%", "ivf_sq8"),
    ("%IVF%", "ivf_flat"),
    ("%Flat", "flat"),
)


def upgrade() -> None:
    with op.batch_alter_table("indexes") as batch:
        batch.add_column(sa.Column("kind", sa.String(32), server_default="", nullable=False))
    indexes = sa.table("indexes", sa.column("factory", sa.String), sa.column("kind", sa.String))
    for pattern, kind in _KIND_FROM_FACTORY:
        op.execute(indexes.update().where(indexes.c.kind == "", indexes.c.factory.like(pattern)).values(kind=kind))


def downgrade() -> None:
    with op.batch_alter_table("indexes") as batch:
        batch.drop_column("kind")
