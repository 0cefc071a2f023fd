"""The lexical index: full-text search over items inside the database engine (issue 24).

Migration 0004 builds it: an FTS5 table kept in step by triggers on SQLite, a GIN expression
index on PostgreSQL. Each live item's document is its text, its metadata's string and number
values and its file name. This module turns a user's query into a literal term query and runs it.

User input never reaches the engines' query syntax. :func:`terms` keeps the words of the query
(runs of letters and digits, lower-cased, at most :data:`MAX_TERMS` distinct ones) and drops
everything else: quotes, ``*``, ``-``, ``^``, ``:``, parentheses, emoji. On SQLite each word becomes
a double-quoted FTS5 string (a literal; ``NEAR`` or ``OR`` typed by a user are words like any
other); on PostgreSQL each is a bound parameter of ``plainto_tsquery('simple', ...)``. The terms
are OR-ed: a document matching any of them is a hit, ranked by how well it matches (SQLite:
BM25; PostgreSQL: ``ts_rank_cd``, cover density, which has no inverse document frequency).
"""

from __future__ import annotations

import re
from functools import reduce
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, bindparam, cast, column, func, literal_column, select, table, text
from sqlalchemy.orm import Session

from app.db.models import Item

MAX_TERMS = 32
SQLITE_DEPTH = 2  # FTS5 matches read a lexical hit wanted, before the whole match list (see _sqlite)
_WORD = re.compile(r"[^\W_]+")

# Must stay the expression migration 0004 indexes (character for character), or PostgreSQL's
# planner will not use the index.
MAX_CHARS = 100_000
PG_DOCUMENT = (
    "to_tsvector('simple'::regconfig, regexp_replace(left("
    "coalesce(text, '') || ' ' || "
    "coalesce(jsonb_path_query_array(metadata, "
    "'strict $.** ? (@.type() == \"string\" || @.type() == \"number\")')::text, '') || ' ' || "
    "coalesce(regexp_replace(image_path, '^.*/', ''), ''), "
    f"{MAX_CHARS}), '[[:punct:]]+', ' ', 'g'))"
)

_FTS = table("items_lexical", column("rowid"), column("body"))


# English function words a query's lexical part leaves out, unless nothing else is left. They are
# rare in short texts such as names and titles, so bm25 weights them highly: "a cat" put "A button
# (blood type)" first. Only the query drops them (the index keeps every word), and only English ones:
# a short list of our own, where sklearn's (318 words, "something" among them) would also pull
# sklearn into the API process.
STOP_WORDS = frozenset(
    "a an the and or but of in on at to for from by with without into onto over under about as is are "
    "was were be been being it its this that these those some any my your our their his her".split()
)


def terms(query: str) -> list[str]:
    """The distinct words of ``query``, lower-cased, in order, at most :data:`MAX_TERMS`, English
    function words left out unless the query has nothing else: what the lexical search looks for.
    Empty when the query has no letters or digits (``"!!!"``, emoji)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    words = list(seen)
    content = [w for w in words if w not in STOP_WORDS]
    return (content or words)[:MAX_TERMS]


def fts5_query(words: list[str]) -> str:
    """An FTS5 query matching any of ``words``, each a quoted string (``"`` doubled inside)."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def _has(modality: str) -> ColumnElement[bool]:
    return Item.image_path.is_not(None) if modality == "image" else Item.text.is_not(None)


def search(session: Session, words: list[str], modality: str, limit: int, where: Any = None) -> list[tuple[int, float]]:
    """The best ``limit`` live items with a ``modality`` that match any of ``words`` (and ``where``,
    a filter's clause): ``(id, score)`` pairs, the engine's score (higher is better), ties by id."""
    if not words or limit < 1:
        return []
    conditions = [Item.deleted_at.is_(None), _has(modality)]
    if where is not None:
        conditions.append(where)
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_postgresql(words, conditions).limit(limit))
        return [(int(item_id), float(score)) for item_id, score in rows]
    return _sqlite(session, fts5_query(words), conditions, limit)


def _sqlite(session: Session, query: str, conditions: list, limit: int) -> list[tuple[int, float]]:
    """FTS5's best ``SQLITE_DEPTH * limit`` matches first, each looked up in ``items`` (a left join, so
    that those the conditions drop still count); the whole match list only when those do not give
    ``limit`` hits and there are more matches. Joining every match (a common word matches most items)
    before the cut cost more than scoring them."""
    depth = SQLITE_DEPTH * limit
    match = text("items_lexical MATCH :lexical_query").bindparams(lexical_query=query)
    matches = (
        select(_FTS.c.rowid, literal_column("rank").label("rank"))  # rank: bm25(), lower for better matches
        .where(match)
        .order_by(literal_column("rank"), _FTS.c.rowid)
        .limit(depth)
        .subquery()
    )
    top = select(matches.c.rowid, matches.c.rank, Item.id).outerjoin(
        Item.__table__, and_(Item.id == matches.c.rowid, *conditions)
    )
    rows = session.execute(top.order_by(matches.c.rank, matches.c.rowid)).all()
    hits = [(int(item_id), -float(rank)) for _, rank, item_id in rows if item_id is not None]
    if len(hits) >= limit or len(rows) < depth:
        return hits[:limit]
    # bm25() is lower for better matches; the ORDER BY names the expression so FTS5 can sort by rank
    score = (-func.bm25(literal_column("items_lexical"))).label("score")
    every = (
        select(Item.id, score)
        .select_from(_FTS.join(Item.__table__, Item.id == _FTS.c.rowid))
        .where(match, *conditions)
        .order_by(score.desc(), Item.id)
        .limit(limit)
    )
    return [(int(item_id), float(score)) for item_id, score in session.execute(every)]


def _postgresql(words: list[str], conditions: list):
    document: ColumnElement[Any] = literal_column(PG_DOCUMENT)
    simple: ColumnElement[Any] = literal_column("'simple'::regconfig")
    # plainto_tsquery reads its argument as plain text; `||` between tsqueries is OR
    each: list[ColumnElement[Any]] = [func.plainto_tsquery(simple, bindparam(f"w{i}", w)) for i, w in enumerate(words)]
    query = reduce(lambda a, b: a.op("||")(b), each)
    score = cast(func.ts_rank_cd(document, query), Float).label("score")
    return select(Item.id, score).where(document.op("@@")(query), and_(*conditions)).order_by(score.desc(), Item.id)
