"""Each model's relevance calibration: a monotone map from cosine score to P(relevant), fitted on its
evaluation pairs (issue 24), kept on its row beside the evaluation report.

NULL until one is fitted; ``app.pipelines.calibration`` writes it when the model becomes servable
and whenever its evaluation set's fingerprint changes.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("calibration", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("calibration")
