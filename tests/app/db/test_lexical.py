"""The lexical index inside the database (migration 0004, ``app.db.lexical``), on SQLite and PostgreSQL.

It follows the item rows in their own transaction (insert, update, soft and hard delete), indexes
the text, the metadata's string and number values and the file name, and takes any user input as
literal words: FTS syntax, other scripts, emoji and very long strings are searched, never parsed.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, text, update

from app.db import crud, lexical
from app.db.models import Item
from app.db.session import make_engine, upgrade
from tests.helpers.postgres import fresh_postgres_database

NASTY = [
    '"',
    '""',
    '"unbalanced',
    "it's",
    "*",
    "cat*",
    "-cat",
    "cat -dog",
    "NEAR(cat dog)",
    "NEAR(cat dog, 2)",
    "cat OR dog",
    "cat AND dog",
    "NOT cat",
    "(cat",
    "cat)",
    "body:cat",
    "items_lexical:cat",
    "^cat",
    "cat^2",
    "{body}: cat",
    "cat + dog",
    "cat & dog | !bird",
    "'cat' <-> 'dog'",
    "cat:*",
    "\\",
    "%_",
    "\x00cat",
    "猫の顔",
    "مرحبا بالعالم",
    "😀 🐱‍👤",
    "👍🏽",
    "Ünïcödé café",
    "\u200b\u200d",
    " ",
    "a" * 5000,
    " ".join(f"w{i}" for i in range(500)),
]


def _add(session, external_id: str, **fields) -> int:
    ids, _ = crud.add_items(session, [crud.NewItem(external_id, **fields)])
    return ids[0]


def _found(session, query: str, modality: str = "image") -> list[int]:
    return [i for i, _ in lexical.search(session, lexical.terms(query), modality, 1000)]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("A red Circle", ["red", "circle"]),  # English function words go...
        ("a cat on the mat", ["cat", "mat"]),
        ("The Who", ["who"]),
        ("to be or not to be", ["not"]),
        ("the", ["the"]),  # ...unless nothing else is left
        ("of the", ["of", "the"]),
        ("red red RED", ["red"]),
        ('NEAR("cat" OR dog*) -bird ^2 body:x', ["near", "cat", "dog", "bird", "2", "body", "x"]),
        ("cat_face.png", ["cat", "face", "png"]),
        ("猫の顔 مرحبا", ["猫の顔", "مرحبا"]),
        ("😀 !!! ***", []),
        ("", []),
    ],
)
def test_terms_are_the_words_only(query, words):
    assert lexical.terms(query) == words


def test_terms_are_capped():
    assert len(lexical.terms(" ".join(f"w{i}" for i in range(100)))) == lexical.MAX_TERMS


def test_fts5_query_quotes_every_word():
    assert lexical.fts5_query(["near", 'x"y']) == '"near" OR "x""y"'


def test_text_metadata_values_and_file_name_are_indexed(session):
    item = _add(
        session,
        "a",
        image_path="/photos/2024/cat_face.png",
        text="A grinning face",
        metadata={"house": "google", "tags": ["striped", {"deep": "nested"}], "year": 2024, "flag": True},
    )
    for query in ("grinning", "GOOGLE", "striped", "nested", "2024", "cat", "face", "png"):
        assert _found(session, query) == [item], query
    assert _found(session, "house") == []  # keys are not values
    assert _found(session, "true") == []  # nor are booleans
    assert _found(session, "photos") == []  # only the file name of the path


def test_the_index_follows_the_rows_in_their_transaction(session):
    item = _add(session, "a", image_path="/x/one.png", text="zebra crossing")
    assert _found(session, "zebra") == [item]  # visible inside the transaction that added it
    session.rollback()
    assert _found(session, "zebra") == []  # and gone with it
    item = _add(session, "a", image_path="/x/one.png", text="zebra crossing")
    session.commit()
    session.execute(update(Item).where(Item.id == item).values(text="okapi", meta={"tag": "stripes"}))
    assert _found(session, "zebra") == [] and _found(session, "okapi") == [item] == _found(session, "stripes")
    session.commit()
    assert crud.soft_delete_items(session, ids=[item]) == [item]
    session.flush()
    assert _found(session, "okapi") == []  # deleted items never come back through the lexical path
    session.rollback()
    assert _found(session, "okapi") == [item]
    session.execute(delete(Item).where(Item.id == item))
    assert _found(session, "okapi") == []
    session.commit()


def test_reingesting_an_item_keeps_one_entry(session):
    first = _add(session, "a", image_path="/x/cat.png", text="tabby cat")
    session.commit()
    ids, skipped = crud.add_items(session, [crud.NewItem("a", image_path="/x/cat.png", text="tabby cat")])
    session.commit()
    assert (ids, skipped) == ([], 1)
    assert _found(session, "tabby") == [first]


def test_modality_filter_and_ranking(session):
    image = _add(session, "i", image_path="/x/i.png", text="red red circle")
    text_only = _add(session, "t", text="red square")
    other = _add(session, "o", image_path="/x/o.png", text="red circle in a big field of grass", metadata={"c": "x"})
    session.commit()
    assert _found(session, "red", "image") == [image, other]  # shorter document, more matches: better
    assert set(_found(session, "red", "text")) == {image, text_only, other}
    where = Item.meta.is_not(None)
    got = lexical.search(session, ["red"], "image", 10, where)
    assert [i for i, _ in got] == [other] and got[0][1] > 0


def test_ties_are_ordered_by_id(session):
    ids = [_add(session, f"copy-{i}", image_path=f"/x/{i}.png", text="same words here") for i in range(5)]
    session.commit()
    got = lexical.search(session, ["same"], "image", 10)
    assert [i for i, _ in got] == sorted(ids) and len({s for _, s in got}) == 1


@pytest.mark.parametrize("query", NASTY)
def test_nasty_queries_are_literal_words(session, query):
    _add(session, "a", image_path="/x/cat.png", text="cat and dog 猫の顔 مرحبا café")
    session.commit()
    hits = lexical.search(session, lexical.terms(query), "image", 10)
    assert all(isinstance(i, int) and s >= 0 for i, s in hits)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=st.text(max_size=300))
def test_any_string_is_searched_without_error(session, query):
    hits = lexical.search(session, lexical.terms(query), "image", 10)
    assert isinstance(hits, list)


@pytest.mark.postgres
def test_postgresql_uses_the_gin_index(postgres_admin):
    with fresh_postgres_database(postgres_admin) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                connection.execute(text("SET enable_seqscan = off"))
                conditions = [Item.deleted_at.is_(None), lexical._has("image")]
                statement = lexical._postgresql(["cat", "dog"], conditions).limit(5)
                compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
                plan = "\n".join(row[0] for row in connection.execute(text(f"EXPLAIN {compiled}")))
        finally:
            engine.dispose()
    assert "ix_items_lexical" in plan, plan


@pytest.mark.parametrize("limit", [1, 3, 5, 40])
def test_a_short_page_of_the_best_matches_reads_on_to_the_rest(session, limit):
    """The best matches are texts without an image (and an unfiltered page), the image items rank below
    all of them: the SQLite search's first read (the best few matches) gives too few hits and it
    reads the whole match list; the answer is the full ranking's top ``limit`` either way."""
    texts = [_add(session, f"t{i}", text="cat") for i in range(30)]  # short documents: the best bm25
    images = [_add(session, f"i{i}", image_path=f"/x/{i}.png", text=f"cat and {i} other words") for i in range(6)]
    session.commit()
    full = [i for i, _ in lexical.search(session, ["cat"], "image", 1000)]
    assert sorted(full) == images
    assert [i for i, _ in lexical.search(session, ["cat"], "image", limit)] == full[:limit]
    every = [i for i, _ in lexical.search(session, ["cat"], "text", 1000)]  # items with a text: all of them
    assert every[:30] == sorted(texts) and sorted(every[30:]) == images
    assert [i for i, _ in lexical.search(session, ["cat"], "text", limit)] == every[:limit]
