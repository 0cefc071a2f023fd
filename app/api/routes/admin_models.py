"""Admin: models (list, evaluate, promote, roll back), indexes, and deleting items."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from app.api.admin_schemas import (
    DeletedItems,
    DeleteItemsRequest,
    EvaluateRequest,
    IndexesPublic,
    IndexPublic,
    JobPublic,
    ModelPublic,
    ModelsPublic,
    PromoteRequest,
    RollbackRequest,
    RollbackResponse,
)
from app.api.auth import AdminDep
from app.api.deps import DbId, Limit, Offset, SessionDep, SessionFactoryDep, SettingsDep
from app.api.errors import ApiError
from app.api.submit import ADMIN_ERRORS, queue_job
from app.db import crud
from app.db.models import Index, Model
from app.jobs.kinds import EvaluateParams, PromoteParams
from app.pipelines.lifecycle import NoRollbackTarget, rollback, rollback_target
from app.values import MAX_DB_ID

router = APIRouter(tags=["admin: models"])


def model_or_404(session, model_id: int) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        raise ApiError(404, "model_not_found", f"no model with id {model_id}")
    return model


@router.get("/models", response_model=ModelsPublic, responses=ADMIN_ERRORS)
def list_models(
    _key: AdminDep,
    session: SessionDep,
    offset: Offset = 0,
    limit: Limit = 50,
) -> ModelsPublic:
    """Every model version the service has used, newest first: spec, lineage, checkpoint, reports, status; which
    one is active and which a rollback would flip to."""
    rows = session.scalars(select(Model).order_by(Model.id.desc()).offset(offset).limit(limit)).all()
    count = session.scalar(select(func.count()).select_from(Model)) or 0
    active = crud.get_active_model(session)
    target = rollback_target(session, active.id) if active is not None else None
    return ModelsPublic(
        data=[ModelPublic.model_validate(m) for m in rows],
        count=count,
        active_id=active.id if active else None,
        rollback_target_id=target.id if target else None,
    )


@router.get("/models/{model_id:int}", response_model=ModelPublic, responses=ADMIN_ERRORS)
def get_model(model_id: DbId, _key: AdminDep, session: SessionDep) -> ModelPublic:
    return ModelPublic.model_validate(model_or_404(session, model_id))


@router.post("/models/{model_id:int}/evaluate", status_code=202, response_model=JobPublic, responses=ADMIN_ERRORS)
def evaluate_model(
    model_id: DbId, body: EvaluateRequest, key: AdminDep, session: SessionDep, settings: SettingsDep
) -> JobPublic:
    """Queue an evaluation; its report lands on the model (`eval_report.evaluations`)."""
    model_or_404(session, model_id)
    params = EvaluateParams(kind="evaluate", model_id=model_id, dataset=body.dataset, split=body.split)
    return queue_job(session, settings, params, created_by=key.name)


@router.post("/models/{model_id:int}/promote", status_code=202, response_model=JobPublic, responses=ADMIN_ERRORS)
def promote_model(
    model_id: DbId, body: PromoteRequest, key: AdminDep, session: SessionDep, settings: SettingsDep
) -> JobPublic:
    """Queue a promotion: both models are evaluated on the same set, the candidate must win (unless `force`),
    its embeddings and indexes are built beside the live ones, and then the active pair flips at once."""
    model_or_404(session, model_id)
    params = PromoteParams(
        kind="promote", model_id=model_id, force=body.force, metric=body.metric, dataset=body.dataset, split=body.split
    )
    return queue_job(session, settings, params, created_by=key.name)


@router.post("/rollback", response_model=RollbackResponse, responses=ADMIN_ERRORS)
def rollback_model(body: RollbackRequest, _key: AdminDep, session_factory: SessionFactoryDep) -> RollbackResponse:
    """Flip back to the previous (model, indexes) pair now; API processes serve it within a refresh."""
    try:
        previous, active = rollback(session_factory, body.to_model_id)
    except NoRollbackTarget as e:
        raise ApiError(409, "no_rollback_target", str(e)) from e
    except LookupError as e:
        raise ApiError(404, "model_not_found", str(e.args[0])) from e
    return RollbackResponse(previous=ModelPublic.model_validate(previous), active=ModelPublic.model_validate(active))


@router.get("/indexes", response_model=IndexesPublic, responses=ADMIN_ERRORS)
def list_indexes(
    _key: AdminDep,
    session: SessionDep,
    model_id: int | None = Query(None, ge=1, le=MAX_DB_ID),
    status: str | None = Query(None, description="building, active or retired"),
    offset: Offset = 0,
    limit: Limit = 50,
) -> IndexesPublic:
    """Index versions, newest first, with their kind, measured recall and recall-QPS curve."""
    query = select(Index)
    if model_id is not None:
        query = query.where(Index.model_id == model_id)
    if status is not None:
        query = query.where(Index.status == status)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Index.id.desc()).offset(offset).limit(limit)).all()
    return IndexesPublic(data=[IndexPublic.model_validate(i) for i in rows], count=count)


@router.delete("/items/{item_id:int}", response_model=DeletedItems, responses=ADMIN_ERRORS)
def delete_item(item_id: DbId, _key: AdminDep, session: SessionDep) -> DeletedItems:
    """Search stops returning the item at once; the index drops it at its next compaction."""
    deleted = crud.soft_delete_items(session, [item_id])
    if not deleted:
        raise ApiError(404, "item_not_found", f"no item with id {item_id}")
    session.commit()
    return DeletedItems(deleted=deleted)


@router.post("/items/delete", response_model=DeletedItems, responses=ADMIN_ERRORS)
def delete_items(body: DeleteItemsRequest, _key: AdminDep, session: SessionDep) -> DeletedItems:
    """Delete items by id and/or external id; unknown ones are ignored."""
    deleted = crud.soft_delete_items(session, body.ids, body.external_ids)
    session.commit()
    return DeletedItems(deleted=deleted)
