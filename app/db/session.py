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
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

import app

MIGRATIONS_DIR = Path(app.__file__).resolve().parent.parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the per-backend settings the service relies on.

    Connections are checked before use (``pool_pre_ping``): after a PostgreSQL restart the pool
    replaces its dead connections by itself. A SQLite file that was replaced under a running
    process (restored from a backup, say) is noticed too: a connection opened on another file
    (inode) is thrown away at checkout, so the process recovers without a restart.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **kwargs)

    database = parsed.database
    path = None
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
    # API threads, the job worker and the ingestion loop share one file: allow
    # cross-thread use and wait for the write lock rather than failing at once.
    connect_args = {"check_same_thread": False, "timeout": 30, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)
    if path is not None:
        _reopen_replaced_files(engine, path)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
        cursor.close()

    return engine


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _reopen_replaced_files(engine: Engine, path: Path) -> None:
    @event.listens_for(engine, "connect")
    def _remember(_dbapi_connection: Any, record: Any) -> None:
        record.info["inode"] = _inode(path)

    @event.listens_for(engine, "checkout")
    def _same_file(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get("inode") != _inode(path):
            raise DisconnectionError(f"{path} was replaced or removed since this connection opened it")


def service_engine(settings: Any) -> Engine:
    """The API's engine: a pool sized for its thread pool, and a short wait for a connection (then 503)."""
    return make_engine(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=8,
        pool_timeout=settings.db_pool_timeout_seconds,
    )


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
