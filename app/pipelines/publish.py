"""Publishing index versions: gather what the index pipeline needs, call it, record the result.

For each modality: the model's embedding shards and the live items decide (``index.pipeline
.plan_update``) whether the active index is kept, extended with new vectors, or rebuilt. A
new version is registered as ``building``, built and published into its own folder, and only
then made active in one transaction. Running API processes notice the new active row and
swap within ``CROSSMODAL_INDEX_REFRESH_SECONDS``; the old version serves until then.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, comma_list
from app.db import crud
from app.db.models import Item, Model
from app.progress import Reporter, quiet
from app.runtime import faiss_gpu
from crossmodal_kernel.modality import MODALITIES, Modality
from index import pipeline, shards, store

log = logging.getLogger(__name__)


def embeddings_dir(settings: Settings, model_id: int, modality: str) -> Path:
    return settings.data_dir / "embeddings" / str(model_id) / modality


def index_policy(settings: Settings) -> pipeline.IndexPolicy:
    return pipeline.IndexPolicy(
        kind=settings.index_kind,
        memory_budget_bytes=settings.index_memory_budget_bytes,
        target_recall=settings.index_target_recall,
        gpu=faiss_gpu(),
        ladder=tuple(comma_list(settings.index_ladder)),
    )


def _live_ids(session: Session, modality: str) -> np.ndarray:
    column = Item.image_path if modality == Modality.IMAGE else Item.text
    ids = session.scalars(select(Item.id).where(Item.deleted_at.is_(None), column.is_not(None)))
    return np.fromiter(ids, dtype=np.int64)


def _other_vectors(settings: Settings, model_id: int, modality: Modality) -> np.ndarray | None:
    """The other modality's embeddings: the queries an index of ``modality`` serves (text for images)."""
    _, other = shards.load_all(embeddings_dir(settings, model_id, modality.other))
    return other if len(other) else None


def publish_indexes(
    session_factory: sessionmaker, model: Model, settings: Settings, force: bool = False, progress: Reporter = quiet
) -> dict[str, int]:
    """Publish a new index version per modality whose content changed; returns ``{modality: index id}``.

    New items are added to a copy of the active index (no retraining). Deleted items stay
    in it as tombstones, filtered at query time, until they pass ``index_compact_fraction``
    of it; then (or with ``force``) the index is rebuilt.
    """
    published = {}
    for modality in MODALITIES:
        index_id = publish_modality(session_factory, model, settings, modality, force, progress)
        if index_id is not None:
            published[modality.value] = index_id
    return published


def publish_modality(
    session_factory: sessionmaker,
    model: Model,
    settings: Settings,
    modality: Modality,
    force: bool = False,
    progress: Reporter = quiet,
) -> int | None:
    """One modality's update (see :func:`publish_indexes`); ``None`` when nothing needed publishing."""
    all_ids, all_xb = shards.load_all(embeddings_dir(settings, model.id, modality))
    with session_factory() as session:
        live = np.isin(all_ids, _live_ids(session, modality))
        active = crud.get_active_indexes(session, model.id).get(modality)
    current = store.load(Path(active.path)) if active is not None and Path(active.path).is_dir() else None
    held = None if current is None or force else store.held_ids(current.index)
    update = pipeline.plan_update(held, all_ids, live, settings.index_compact_fraction)
    if update.action == "skip":
        return None
    row_id, out_dir = _register(session_factory, model, settings, modality, int(all_xb.shape[1]))
    meta = {"index_id": row_id, "model_id": model.id, "modality": modality.value}
    try:
        if update.action == "extend":
            assert current is not None and held is not None
            content = np.isin(all_ids, held) | update.new
            built = pipeline.extend(
                current,
                all_ids[update.new],
                all_xb[update.new],
                (all_ids[content], all_xb[content]),
                pipeline.tuning_queries(all_xb[content], _other_vectors(settings, model.id, modality)),
                out_dir,
                tombstones=update.tombstones,
                meta=meta,
            )
        else:
            ids, xb = all_ids[live], all_xb[live]
            xq, train = pipeline.split_queries(xb, _other_vectors(settings, model.id, modality))
            stages = lambda stage, done, total: progress(f"{modality} index: {stage}", done, total or None)  # noqa: E731
            names = {"served_name": modality.other.value, "same_name": modality.value}
            built = pipeline.build(
                ids, xb, xq, out_dir, index_policy(settings), meta, progress=stages, train=train, **names
            )
    except BaseException as e:
        _abandon(session_factory, row_id, e)
        raise
    _activate(session_factory, row_id, built)
    return row_id


def _register(
    session_factory: sessionmaker, model: Model, settings: Settings, modality: Modality, dim: int
) -> tuple[int, Path]:
    """A ``building`` row for the version about to be built, and the folder it will be published to."""
    with session_factory() as session:
        row = crud.create_index(
            session, model_id=model.id, modality=modality, path="", factory="", kind="", dim=dim, ntotal=0
        )
        out_dir = (settings.data_dir / "indexes" / str(row.id)).resolve()
        row.path = str(out_dir)
        session.commit()
        return row.id, out_dir


def _activate(session_factory: sessionmaker, row_id: int, built: pipeline.BuiltIndex) -> None:
    with session_factory() as session:
        crud.record_index_build(
            session,
            row_id,
            factory=built.factory,
            kind=built.kind,
            ntotal=built.ntotal,
            params=built.search_params,
            stats=built.stats,
        )
        crud.activate_index(session, row_id)
        session.commit()
    log.info("published %s index #%d: %s, %d vectors", built.kind, row_id, built.factory, built.ntotal)


def _abandon(session_factory: sessionmaker, row_id: int, error: BaseException) -> None:
    """A build that failed (or was interrupted) leaves a retired row that says why."""
    try:
        with session_factory() as session:
            crud.retire_index(session, row_id, {"error": f"{type(error).__name__}: {error}"})
            session.commit()
    except Exception:  # the original error is the one to report
        log.exception("could not mark index #%d as failed", row_id)
