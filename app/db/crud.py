"""The data layer: plain functions over a Session.

The caller owns the transaction and commits; these functions only flush, so
several of them can make one atomic change (promote a model and its indexes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.models import (
    Index,
    IndexStatus,
    Item,
    Model,
    ModelStatus,
    utcnow,
)
from crossmodal_kernel.modality import Modality

# Rows per INSERT statement: keeps each statement well under SQLite's and
# PostgreSQL's bound-parameter limits while amortising round trips.
INSERT_CHUNK = 500


def _check(value: str, allowed: type[Any], what: str) -> str:
    if value not in {v.value for v in allowed}:
        raise ValueError(f"{what} must be one of {[v.value for v in allowed]}, got {value!r}")
    return value


# --- items ------------------------------------------------------------------


@dataclass(frozen=True)
class NewItem:
    external_id: str
    source: str | None = None
    image_path: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None


def add_items(session: Session, items: Sequence[NewItem]) -> tuple[list[int], int]:
    """Insert items, skipping external ids already present (re-running an ingest is safe).

    Returns the ids of the rows inserted now (ascending) and how many were skipped.
    A soft-deleted item still owns its external id and is skipped too.
    """
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table = Item.__table__
    assert isinstance(table, Table)  # declarative: typed as any FromClause, but a mapped class has a Table
    new_ids: list[int] = []
    for start in range(0, len(items), INSERT_CHUNK):
        rows = [
            {
                "external_id": it.external_id,
                "source": it.source,
                "image_path": it.image_path,
                "text": it.text,
                "metadata": it.metadata,
            }
            for it in items[start : start + INSERT_CHUNK]
        ]
        stmt = insert(table).values(rows).on_conflict_do_nothing(index_elements=["external_id"]).returning(table.c.id)
        new_ids.extend(session.execute(stmt).scalars())
    return sorted(new_ids), len(items) - len(new_ids)


def _live_items():
    return select(Item).where(Item.deleted_at.is_(None))


def get_item(session: Session, item_id: int) -> Item | None:
    return session.scalars(_live_items().where(Item.id == item_id)).first()


def get_items(session: Session, ids: Sequence[int]) -> dict[int, Item]:
    """Hydrate search hits in one query; deleted or unknown ids are simply absent."""
    if not ids:
        return {}
    found = session.scalars(_live_items().where(Item.id.in_(set(ids))))
    return {item.id: item for item in found}


# Built once: search hydration runs on every request, and building the statement
# (not executing it) was a third of its cost.
_HITS = select(Item.id, Item.external_id, Item.text, Item.image_path, Item.meta).where(
    Item.id.in_(bindparam("ids", expanding=True)), Item.deleted_at.is_(None)
)


def get_hits(session: Session, ids: Sequence[int], where: Any = None) -> dict[int, Row]:
    """The fields a search result shows, for live ``ids`` (that also pass ``where``, a filter's
    clause), as light rows (not ORM objects)."""
    if not ids:
        return {}
    statement = _HITS if where is None else _HITS.where(where)
    return {row.id: row for row in session.execute(statement, {"ids": list(set(ids))})}


_LIVE = select(Item.id).where(Item.id.in_(bindparam("ids", expanding=True)), Item.deleted_at.is_(None))


def live_ids(session: Session, ids: Sequence[int], where: Any = None) -> set[int]:
    """Which of ``ids`` are live items (that pass ``where``): :func:`get_hits` without the fields."""
    if not ids:
        return set()
    statement = _LIVE if where is None else _LIVE.where(where)
    return set(session.scalars(statement, {"ids": list(set(ids))}))


def matching_ids(session: Session, where: Any, modality: str, limit: int) -> list[int]:
    """Ids of live items with a ``modality`` that pass ``where``, sorted, at most ``limit`` of them."""
    has = Item.image_path.is_not(None) if modality == "image" else Item.text.is_not(None)
    statement = select(Item.id).where(Item.deleted_at.is_(None), has, where).order_by(Item.id).limit(limit)
    return list(session.scalars(statement))


def soft_delete_items(session: Session, ids: Sequence[int] = (), external_ids: Sequence[str] = ()) -> list[int]:
    """Mark live items deleted (tombstones); returns the ids that were live. Search stops returning
    them at once (hydration skips them); the next compaction drops them from the index."""
    from datetime import UTC, datetime

    cond = []
    if ids:
        cond.append(Item.id.in_(list(ids)))
    if external_ids:
        cond.append(Item.external_id.in_(list(external_ids)))
    if not cond:
        return []
    from sqlalchemy import or_

    rows = session.scalars(select(Item).where(or_(*cond), Item.deleted_at.is_(None))).all()
    now = datetime.now(UTC)
    for item in rows:
        item.deleted_at = now
    return [item.id for item in rows]


def count_items(session: Session) -> int:
    return session.scalars(select(func.count()).select_from(Item).where(Item.deleted_at.is_(None))).one()


def list_items(session: Session, offset: int, limit: int) -> tuple[list[Item], int]:
    page = session.scalars(_live_items().order_by(Item.id).offset(offset).limit(limit)).all()
    return list(page), count_items(session)


def iter_item_batches(
    session: Session, batch_size: int, after_id: int = 0, modality: str | None = None
) -> Iterator[list[Item]]:
    """Walk all live items in id order without OFFSET, so millions of rows stay cheap.

    A job can resume from the last id it finished (``after_id``). With a modality,
    only items that have it: ``image`` needs an image path, ``text`` needs text.
    """
    query = _live_items().order_by(Item.id).limit(batch_size)
    if modality is not None:
        column = Item.image_path if _check(modality, Modality, "modality") == "image" else Item.text
        query = query.where(column.is_not(None))
    while True:
        batch = list(session.scalars(query.where(Item.id > after_id)))
        if not batch:
            return
        yield batch
        after_id = batch[-1].id


# --- models -----------------------------------------------------------------


def get_active_model(session: Session) -> Model | None:
    return session.scalars(select(Model).where(Model.status == ModelStatus.ACTIVE)).first()


def create_model(
    session: Session,
    spec: str,
    *,
    name: str | None = None,
    checkpoint_path: str | None = None,
    parent_id: int | None = None,
    status: str = ModelStatus.CANDIDATE,
    eval_report: dict[str, Any] | None = None,
) -> Model:
    """Register a model version; ``status="active"`` goes through :func:`activate_model`."""
    activate = _check(status, ModelStatus, "model status") == ModelStatus.ACTIVE
    model = Model(
        spec=spec,
        name=name,
        checkpoint_path=checkpoint_path,
        parent_id=parent_id,
        status=ModelStatus.CANDIDATE if activate else status,
        eval_report=eval_report,
    )
    session.add(model)
    session.flush()
    return activate_model(session, model.id) if activate else model


def activate_model(session: Session, model_id: int) -> Model:
    """Make a model the only active one (promotion, or rollback to an older one)."""
    model = session.get(Model, model_id, with_for_update=True)
    if model is None:
        raise LookupError(f"no model {model_id}")
    # Retire first, in its own statement: the partial unique index allows one active row.
    session.execute(
        update(Model).where(Model.status == ModelStatus.ACTIVE, Model.id != model_id).values(status=ModelStatus.RETIRED)
    )
    model.status = ModelStatus.ACTIVE
    model.promoted_at = utcnow()
    session.flush()
    return model


# --- indexes ----------------------------------------------------------------


def create_index(
    session: Session,
    *,
    model_id: int,
    modality: str,
    path: str,
    factory: str,
    dim: int,
    ntotal: int,
    kind: str = "",
    metric: str = "ip",
    params: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
    status: str = IndexStatus.BUILDING,
) -> Index:
    """Register an index; ``status="active"`` goes through :func:`activate_index`."""
    activate = _check(status, IndexStatus, "index status") == IndexStatus.ACTIVE
    index = Index(
        model_id=model_id,
        modality=_check(modality, Modality, "modality"),
        path=path,
        factory=factory,
        kind=kind,
        metric=metric,
        dim=dim,
        ntotal=ntotal,
        status=IndexStatus.BUILDING if activate else status,
        params=params,
        stats=stats,
    )
    session.add(index)
    session.flush()
    return activate_index(session, index.id) if activate else index


def record_index_build(
    session: Session,
    index_id: int,
    *,
    factory: str,
    kind: str,
    ntotal: int,
    params: dict[str, Any] | None,
    stats: dict[str, Any] | None,
) -> Index:
    """Fill in what the build of a ``building`` index produced (before :func:`activate_index`)."""
    index = session.get(Index, index_id)
    if index is None:
        raise LookupError(f"no index {index_id}")
    index.factory, index.kind, index.ntotal, index.params, index.stats = factory, kind, ntotal, params, stats
    session.flush()
    return index


def retire_index(session: Session, index_id: int, stats: dict[str, Any] | None = None) -> Index:
    """Take an index out of service (or mark a failed build as such), keeping why in its stats."""
    index = session.get(Index, index_id)
    if index is None:
        raise LookupError(f"no index {index_id}")
    index.status = IndexStatus.RETIRED
    if stats:
        index.stats = {**(index.stats or {}), **stats}
    session.flush()
    return index


def activate_index(session: Session, index_id: int) -> Index:
    """Publish an index: API processes of its model swap to it on their next refresh."""
    index = session.get(Index, index_id, with_for_update=True)
    if index is None:
        raise LookupError(f"no index {index_id}")
    session.execute(
        update(Index)
        .where(
            Index.model_id == index.model_id,
            Index.modality == index.modality,
            Index.status == IndexStatus.ACTIVE,
            Index.id != index_id,
        )
        .values(status=IndexStatus.RETIRED)
    )
    index.status = IndexStatus.ACTIVE
    session.flush()
    return index


def get_active_indexes(session: Session, model_id: int) -> dict[str, Index]:
    found = session.scalars(select(Index).where(Index.model_id == model_id, Index.status == IndexStatus.ACTIVE))
    return {index.modality: index for index in found}
