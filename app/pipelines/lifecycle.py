"""Model changes as alias flips: promote a candidate whose embeddings and indexes are already built,
roll back to the previous pair, and delete generations too old to roll back to.

The active (model, indexes) pair is what ``models.status = 'active'`` names, each model's indexes
being the ones active for it. A promotion builds the candidate's indexes beside the live ones
first; the flip itself is one transaction, and every API process swaps encoder and index together
at its next refresh (``app.serving.state``). Rollback is the same flip backwards, at once, for any of
the last ``CROSSMODAL_KEEP_GENERATIONS`` models, whose files are kept on disk.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import crud
from app.db.models import Index, IndexStatus, Model, ModelStatus, utcnow

log = logging.getLogger(__name__)

RETIRED_INDEX_VERSIONS_KEPT = 2  # per model and modality, besides the active one


class NoRollbackTarget(LookupError):
    pass


def servable(session: Session, model_id: int) -> bool:
    """Whether a model has at least one active index whose folder is on disk."""
    return any(Path(index.path).is_dir() for index in crud.get_active_indexes(session, model_id).values())


def flip(session: Session, model_id: int) -> Model:
    """Make ``model_id`` the active model (its indexes come with it); the caller commits."""
    if not servable(session, model_id):
        raise NoRollbackTarget(f"model {model_id} has no index on disk to serve with")
    return crud.activate_model(session, model_id)


def rollback_target(session: Session, current_id: int) -> Model | None:
    """The model a plain rollback flips to: the most recently promoted other one whose indexes are on disk."""
    earlier = session.scalars(
        select(Model).where(Model.id != current_id, Model.promoted_at.is_not(None)).order_by(Model.promoted_at.desc())
    )
    return next((m for m in earlier if servable(session, m.id)), None)


def rollback(session_factory: sessionmaker, to_model_id: int | None = None) -> tuple[Model, Model]:
    """Flip back to ``to_model_id``, or to the most recently active model before the current one.

    Returns ``(previous active, now active)``.
    """
    with session_factory() as session:
        current = crud.get_active_model(session)
        if current is None:
            raise NoRollbackTarget("there is no active model to roll back from")
        if to_model_id is None:
            target = rollback_target(session, current.id)
            if target is None:
                raise NoRollbackTarget("no earlier model still has its indexes on disk")
        else:
            target = session.get(Model, to_model_id)
            if target is None:
                raise LookupError(f"no model {to_model_id}")
        flip(session, target.id)
        session.commit()
        log.info("rolled back from model %d to model %d", current.id, target.id)
        return current, target


def cleanup(settings: Settings, session_factory: sessionmaker) -> dict:
    """Delete the embeddings and indexes of models older than the last ``keep_generations`` active ones,
    and index versions superseded more than ``RETIRED_INDEX_VERSIONS_KEPT`` times. Rows stay (history)."""
    removed: dict = {"models": [], "indexes": []}
    with session_factory() as session:
        promoted = session.scalars(
            select(Model).where(Model.promoted_at.is_not(None)).order_by(Model.promoted_at.desc())
        ).all()
        keep = {m.id for m in promoted[: settings.keep_generations]}
        keep |= {m.id for m in session.scalars(select(Model).where(Model.status == ModelStatus.CANDIDATE))}
        for model in promoted[settings.keep_generations :]:
            if model.id in keep or model.status == ModelStatus.ACTIVE:
                continue
            for index in session.scalars(select(Index).where(Index.model_id == model.id)):
                _drop_index(index, removed)
            shutil.rmtree(settings.data_dir / "embeddings" / str(model.id), ignore_errors=True)
            removed["models"].append(model.id)
        for model_id in keep:
            for modality in ("image", "text"):
                retired = session.scalars(
                    select(Index)
                    .where(Index.model_id == model_id, Index.modality == modality, Index.status == IndexStatus.RETIRED)
                    .order_by(Index.id.desc())
                ).all()
                for index in retired[RETIRED_INDEX_VERSIONS_KEPT:]:
                    _drop_index(index, removed)
        session.commit()
    return removed


def _drop_index(index: Index, removed: dict) -> None:
    if index.status == IndexStatus.ACTIVE:
        index.status = IndexStatus.RETIRED
    if Path(index.path).is_dir():
        shutil.rmtree(index.path, ignore_errors=True)  # open mappings stay valid (POSIX)
        index.stats = {**(index.stats or {}), "deleted_at": utcnow().isoformat()}
        removed["indexes"].append(index.id)
