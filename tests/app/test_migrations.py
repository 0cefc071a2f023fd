"""The migrations build exactly the schema the ORM models describe, on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from app.db import current_revision, downgrade, ensure_schema_current, head_revision
from app.db.session import make_engine, upgrade

EXPECTED_COLUMNS = {
    "items": {
        "id", "external_id", "source", "image_path", "text", "metadata", "created_at",
        "deleted_at",
    },
    "models": {
        "id", "name", "spec", "checkpoint_path", "parent_id", "status", "eval_report", "calibration",
        "created_at", "promoted_at",
    },
    "indexes": {
        "id", "model_id", "modality", "path", "factory", "kind", "metric", "dim", "ntotal", "status",
        "params", "stats", "created_at",
    },
    "jobs": {
        "id", "kind", "status", "params", "progress", "message", "result", "error",
        "worker_id", "heartbeat_at", "created_at", "started_at", "finished_at", "attempts",
        "max_attempts", "cancel_requested_at", "details", "log", "created_by",
    },
    "api_keys": {"id", "name", "prefix", "secret_hash", "role", "created_at", "revoked_at", "last_used_at"},
}  # fmt: skip


def _ours(names) -> set[str]:
    """The tables the ORM models: not Alembic's, not SQLite's FTS5 lexical index (migration 0004)."""
    return {n for n in names if n != "alembic_version" and not n.startswith("items_lexical")}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return _ours(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_all_tables_and_columns(db_url):
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    engine = make_engine(db_url)
    try:
        inspector = inspect(engine)
        assert _ours(inspector.get_table_names()) == set(EXPECTED_COLUMNS)
        for table, columns in EXPECTED_COLUMNS.items():
            assert {c["name"] for c in inspector.get_columns(table)} == columns, table
        assert any(u["column_names"] == ["external_id"] for u in inspector.get_unique_constraints("items"))
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(db_url):
    upgrade(db_url)
    downgrade(db_url, "base")
    assert current_revision(db_url) is None
    assert _tables(db_url) == set()
    upgrade(db_url)
    assert _tables(db_url) == set(EXPECTED_COLUMNS)


def test_ensure_schema_current_refuses_unmigrated_database(db_url):
    engine = make_engine(db_url)
    try:
        with pytest.raises(RuntimeError, match=r"crossmodal db upgrade"):
            ensure_schema_current(engine)
        upgrade(engine)
        ensure_schema_current(engine)
        downgrade(engine, "base")
        with pytest.raises(RuntimeError, match=r"schema is at no revision"):
            ensure_schema_current(engine)
    finally:
        engine.dispose()
