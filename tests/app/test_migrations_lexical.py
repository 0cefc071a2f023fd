"""Migration 0004 (the lexical index): it backfills the items already there, and goes down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from app.db import Base, crud, lexical
from app.db.session import downgrade, make_engine, make_session_factory, upgrade

FTS5_TABLES = {"items_lexical", "items_lexical_data", "items_lexical_idx", "items_lexical_content",
               "items_lexical_docsize", "items_lexical_config"}  # fmt: skip


def _items_at_0003(engine) -> None:
    with engine.begin() as connection:
        for i, (path, words, meta, deleted) in enumerate(
            [
                ("/x/cat.png", "tabby cat", '{"colour": "orange"}', None),
                ("/x/dog.png", "good dog", None, None),
                ("/x/gone.png", "deleted cat", None, "2026-01-01 00:00:00"),
            ]
        ):
            connection.execute(
                text(
                    "INSERT INTO items (external_id, image_path, text, metadata, deleted_at) "
                    "VALUES (:e, :p, :t, :m, :d)"
                ),
                {"e": f"item-{i}", "p": path, "t": words, "m": meta, "d": deleted},
            )


def _found(engine, query: str) -> list[str]:
    with make_session_factory(engine)() as session:
        ids = [i for i, _ in lexical.search(session, lexical.terms(query), "image", 10)]
        return [crud.get_item(session, i).external_id for i in ids]


def test_upgrade_backfills_live_items_and_downgrade_removes_the_index(db_url):
    upgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        _items_at_0003(engine)
        upgrade(engine)
        assert _found(engine, "cat") == ["item-0"]  # the deleted cat is not indexed
        assert _found(engine, "orange") == ["item-0"] and _found(engine, "dog") == ["item-1"]
        if engine.dialect.name == "sqlite":
            assert FTS5_TABLES <= set(inspect(engine).get_table_names())
        else:
            assert "ix_items_lexical" in {ix["name"] for ix in inspect(engine).get_indexes("items")}
        downgrade(engine, "0003")
        inspector = inspect(engine)
        assert not FTS5_TABLES & set(inspector.get_table_names())
        assert "ix_items_lexical" not in {ix["name"] for ix in inspector.get_indexes("items")}
        with engine.begin() as connection:  # no trigger left behind to write into a missing table
            connection.execute(text("INSERT INTO items (external_id, text) VALUES ('after', 'cat')"))
        upgrade(engine)
        assert _found(engine, "cat") == ["item-0"]  # text-only items have no image
        with make_session_factory(engine)() as session:
            assert {i for i, _ in lexical.search(session, ["cat"], "text", 10)} == {1, 4}
    finally:
        engine.dispose()


def not_lexical(name, type_, parent_names) -> bool:
    """Leaves out what migration 0004 adds and the ORM does not model: SQLite's FTS5 table (and its
    shadow tables), PostgreSQL's expression index."""
    return not (name or "").startswith(("items_lexical", "ix_items_lexical"))


def test_orm_models_match_the_schema_besides_the_lexical_index(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "include_name": not_lexical})
        assert compare_metadata(context, Base.metadata) == []


def test_the_searched_document_is_the_one_migration_0004_indexes():
    """PostgreSQL uses the GIN index only for the same expression, character for character; the
    migration keeps its own copy (a migration must not change when the app does), so compare them."""
    import importlib.util

    from app.db.session import MIGRATIONS_DIR

    spec = importlib.util.spec_from_file_location("m0004", MIGRATIONS_DIR / "versions" / "0004_lexical.py")
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.PG_DOCUMENT == lexical.PG_DOCUMENT
