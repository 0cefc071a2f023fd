"""Persistence: ORM models, engines and sessions, migrations, and the data layer (``crud``)."""

from app.db.models import (
    Base,
    Index,
    IndexStatus,
    Item,
    Job,
    JobStatus,
    Model,
    ModelStatus,
)
from app.db.session import (
    current_revision,
    downgrade,
    ensure_schema_current,
    head_revision,
    make_engine,
    make_session_factory,
    upgrade,
)

__all__ = [
    "Base",
    "Index",
    "IndexStatus",
    "Item",
    "Job",
    "JobStatus",
    "Model",
    "ModelStatus",
    "current_revision",
    "downgrade",
    "ensure_schema_current",
    "head_revision",
    "make_engine",
    "make_session_factory",
    "upgrade",
]
