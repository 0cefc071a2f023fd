"""ORM models for items, models, indexes and jobs.

The schema itself is created only by the Alembic migrations in ``migrations/``;
these classes must match it (``tests/app/test_migrations.py`` checks that).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from crossmodal_kernel.modality import Modality

# Deterministic constraint names, so later migrations (and downgrades) can address them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zones and hands back naive values; comparing those with the
    aware ones PostgreSQL returns raises ``TypeError``, so both are normalised here.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware one (datetime.now(UTC))")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# SQL NULL for None (not the JSON literal ``null``), JSONB on PostgreSQL.
JSONType = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only autoincrements a column typed exactly INTEGER.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"


class IndexStatus(StrEnum):
    BUILDING = "building"
    ACTIVE = "active"
    RETIRED = "retired"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _one_of(column: str, enum: type[StrEnum]) -> sa.CheckConstraint:
    values = ", ".join(f"'{v.value}'" for v in enum)
    return sa.CheckConstraint(f"{column} IN ({values})", name=f"{column}_valid")


def _status(default: StrEnum, **kwargs: Any) -> Mapped[str]:
    value = default.value
    return mapped_column(sa.String(16), default=value, server_default=value, **kwargs)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Item(Base):
    """One searchable thing: an image, a text, or an image with its caption."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(sa.String(1024), unique=True)
    source: Mapped[str | None] = mapped_column(sa.Text)
    image_path: Mapped[str | None] = mapped_column(sa.Text)
    text: Mapped[str | None] = mapped_column(sa.Text)
    # ``metadata`` is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=sa.func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Model(Base):
    """A model version the service has used: spec, checkpoint, lineage, evaluation."""

    __tablename__ = "models"
    __table_args__ = (
        _one_of("status", ModelStatus),
        # At most one active model; the partial index works on PostgreSQL and SQLite.
        sa.Index(
            "uq_models_one_active",
            "status",
            unique=True,
            postgresql_where=sa.text("status = 'active'"),
            sqlite_where=sa.text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str | None] = mapped_column(sa.String(255))
    spec: Mapped[str] = mapped_column(sa.Text)
    checkpoint_path: Mapped[str | None] = mapped_column(sa.Text)
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("models.id"))
    status: Mapped[str] = _status(ModelStatus.CANDIDATE)
    eval_report: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # P(relevant | cosine) fitted on its evaluation pairs (app.pipelines.calibration, migration 0005)
    calibration: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=sa.func.now())
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Index(Base):
    """A published ANN index (a folder of FAISS files) for one model and one modality."""

    __tablename__ = "indexes"
    __table_args__ = (
        _one_of("modality", Modality),
        _one_of("status", IndexStatus),
        sa.Index("ix_indexes_model_id_modality_status", "model_id", "modality", "status"),
        # At most one active index per (model, modality): what API processes swap to.
        sa.Index(
            "uq_indexes_one_active",
            "model_id",
            "modality",
            unique=True,
            postgresql_where=sa.text("status = 'active'"),
            sqlite_where=sa.text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(sa.ForeignKey("models.id"))
    modality: Mapped[str] = mapped_column(sa.String(16))
    path: Mapped[str] = mapped_column(sa.Text)
    factory: Mapped[str] = mapped_column(sa.String(255))
    # The ladder rung (index.factory.KINDS) it was built as: readers never parse the factory string.
    kind: Mapped[str] = mapped_column(sa.String(32), server_default="")
    metric: Mapped[str] = mapped_column(sa.String(16), default="ip", server_default="ip")
    dim: Mapped[int] = mapped_column(sa.Integer)
    ntotal: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = _status(IndexStatus.BUILDING)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=sa.func.now())


class Job(Base):
    """A unit of background work, claimed by a worker process and kept alive by heartbeats."""

    __tablename__ = "jobs"
    __table_args__ = (
        _one_of("status", JobStatus),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = _status(JobStatus.QUEUED, index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    progress: Mapped[float] = mapped_column(sa.Float, default=0.0, server_default="0")
    message: Mapped[str | None] = mapped_column(sa.Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(sa.Text)
    worker_id: Mapped[str | None] = mapped_column(sa.String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=sa.func.now())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Claims so far; a job whose worker died is requeued while attempts < max_attempts.
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(sa.Integer, default=3, server_default="3")
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Progress beyond the fraction: stage, done, total, unit, rate (per second), eta_s.
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    log: Mapped[list[str] | None] = mapped_column(JSONType)  # the last lines the job logged
    created_by: Mapped[str | None] = mapped_column(sa.String(255))  # the API key's name, or "cli"


class KeyRole(StrEnum):
    SEARCH = "search"
    ADMIN = "admin"


class ApiKey(Base):
    """An API key: only a hash of its secret is stored; ``prefix`` finds it and is safe to show."""

    __tablename__ = "api_keys"
    __table_args__ = (_one_of("role", KeyRole),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    prefix: Mapped[str] = mapped_column(sa.String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(sa.String(128))
    role: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=sa.func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
