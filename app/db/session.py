"""Engines, sessions and the programmatic Alembic entry points.

Migrations are the only way the schema is created or changed; the service calls
:func:`ensure_schema_current` at start-up instead of creating anything itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

import app

MIGRATIONS_DIR = Path(app.__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the per-backend settings the service relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **kwargs)

    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # API threads, the job worker and the ingestion loop share one file: allow
    # cross-thread use and wait for the write lock rather than failing at once.
    connect_args = {"check_same_thread": False, "timeout": 30, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
        cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: endpoints serialise them after the commit.
    return sessionmaker(bind=engine, expire_on_commit=False)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, f"no migrations found in {MIGRATIONS_DIR}"
    return head


def _run(url_or_engine: str | Engine, fn: Any, *args: Any) -> None:
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.begin() as connection:
            config = _alembic_config()
            # env.py picks this connection up, so the URL never goes through ini interpolation.
            config.attributes["connection"] = connection
            fn(config, *args)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def upgrade(url: str | Engine, revision: str = "head") -> None:
    _run(url, command.upgrade, revision)


def downgrade(url: str | Engine, revision: str) -> None:
    _run(url, command.downgrade, revision)


def current_revision(url: str | Engine) -> str | None:
    engine = make_engine(url) if isinstance(url, str) else url
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if isinstance(url, str):
            engine.dispose()


def ensure_schema_current(engine: Engine) -> None:
    """Refuse to run against a schema the code was not written for."""
    current, expected = current_revision(engine), head_revision()
    if current != expected:
        shown = current or "no revision (empty database)"
        raise RuntimeError(f"database schema is at {shown}, code expects {expected}: run `crossmodal db upgrade`")
