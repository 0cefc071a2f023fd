"""A lexical (full-text) index over each item's text, metadata values and file name (issue 24).

SQLite: an FTS5 table ``items_lexical`` (rowid = items.id, one column ``body``), kept in step by
triggers on ``items``, so that an insert, an update, a soft delete and a delete change it in the
same transaction as the item row; live items only. PostgreSQL: a GIN index on an expression of
the row (``to_tsvector('simple', ...)``), partial on live items, which the engine keeps in step
by itself. Both index the same text: the item's text, its metadata's string and number values
(nested ones too) and the last component of its image path, the first 100,000 characters.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-15
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from app code (a migration keeps meaning what it meant);
# app/db/lexical.py holds the same expressions, and tests/app/db/test_lexical.py checks that
# PostgreSQL's planner finds this index for the application's query.
MAX_CHARS = 100_000


def _sqlite_body(row: str) -> str:
    """The FTS5 document of one ``items`` row (``NEW`` in a trigger, ``items`` in the backfill)."""
    values = (
        "(SELECT group_concat(j.value, ' ') FROM json_tree("
        f"CASE WHEN json_valid({row}.metadata) THEN {row}.metadata ELSE 'null' END) AS j "
        "WHERE j.type IN ('text', 'integer', 'real'))"
    )
    # rtrim(path, every non-slash character in it) leaves the folder part; what follows is the file name
    name = f"replace({row}.image_path, rtrim({row}.image_path, replace({row}.image_path, '/', '')), '')"
    return (
        f"substr(coalesce({row}.text, '') || ' ' || coalesce({values}, '') || ' ' || coalesce({name}, ''), "
        f"1, {MAX_CHARS})"
    )


# jsonb_path_query_array, the jsonb -> text cast, regexp_replace and the regconfig form of
# to_tsvector are all immutable, as an index expression must be. Punctuation becomes a space
# first so that file names ("cat_face.png") and hyphenated values split into words, as SQLite's
# unicode61 tokenizer splits them.
PG_DOCUMENT = (
    "to_tsvector('simple'::regconfig, regexp_replace(left("
    "coalesce(text, '') || ' ' || "
    "coalesce(jsonb_path_query_array(metadata, "
    "'strict $.** ? (@.type() == \"string\" || @.type() == \"number\")')::text, '') || ' ' || "
    "coalesce(regexp_replace(image_path, '^.*/', ''), ''), "
    f"{MAX_CHARS}), '[[:punct:]]+', ' ', 'g'))"
)

_SQLITE_TRIGGERS = {
    "items_lexical_insert": f"""
        CREATE TRIGGER items_lexical_insert AFTER INSERT ON items WHEN NEW.deleted_at IS NULL BEGIN
            INSERT INTO items_lexical(rowid, body) VALUES (NEW.id, {_sqlite_body("NEW")});
        END""",
    "items_lexical_update": f"""
        CREATE TRIGGER items_lexical_update AFTER UPDATE OF id, text, metadata, image_path, deleted_at ON items
        BEGIN
            DELETE FROM items_lexical WHERE rowid = OLD.id;
            INSERT INTO items_lexical(rowid, body) SELECT NEW.id, {_sqlite_body("NEW")} WHERE NEW.deleted_at IS NULL;
        END""",
    "items_lexical_delete": """
        CREATE TRIGGER items_lexical_delete AFTER DELETE ON items BEGIN
            DELETE FROM items_lexical WHERE rowid = OLD.id;
        END""",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_items_lexical ON items USING gin (({PG_DOCUMENT})) WHERE deleted_at IS NULL")
        return
    # unicode61 folds case and strips diacritics ("Café" matches "cafe"); letters and digits make
    # words, everything else separates them
    op.execute("CREATE VIRTUAL TABLE items_lexical USING fts5(body, tokenize = 'unicode61 remove_diacritics 2')")
    for statement in _SQLITE_TRIGGERS.values():
        op.execute(statement)
    op.execute(
        f"INSERT INTO items_lexical(rowid, body) SELECT items.id, {_sqlite_body('items')} FROM items "
        "WHERE items.deleted_at IS NULL"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_items_lexical")
        return
    for name in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS items_lexical")
