"""Checking a job before it is queued: what would fail at once fails here, with a 4xx, not later in a worker."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from app.config import Settings
from app.db import crud
from app.db.models import Job, Model
from app.jobs import queue
from app.jobs.context import resolve_allowed
from app.jobs.kinds import EmbedParams, EvaluateParams, FinetuneParams, IngestParams, PromoteParams
from app.jobs.training_run import finetune_config
from app.pipelines.evaluation import DB


def submit(
    session: Session,
    settings: Settings,
    params: IngestParams | EmbedParams | FinetuneParams | EvaluateParams | PromoteParams,
    created_by: str | None,
) -> Job:
    """Validate ``params`` against the service's state, then queue the job (the caller commits).

    Raises ``PermissionError`` (a path outside the allowed roots), ``FileNotFoundError``,
    ``LookupError`` (an unknown model), ``ValueError`` or ``pydantic.ValidationError``.
    """
    if isinstance(params, IngestParams) and params.source is not None:
        _existing(resolve_allowed(settings, params.source, "source"), "source")
    elif isinstance(params, FinetuneParams):
        active = crud.get_active_model(session)
        default_model = active.spec if active is not None else settings.model_spec
        cfg = finetune_config(settings, params.config, settings.data_dir / "jobs" / "_", default_model)
        if cfg.data.manifest is not None:
            _existing(Path(cfg.data.manifest), "data.manifest")
    elif isinstance(params, EvaluateParams | PromoteParams):
        if session.get(Model, params.model_id) is None:
            raise LookupError(f"no model {params.model_id}")
        if params.dataset != DB:
            _existing(resolve_allowed(settings, params.dataset, "dataset"), "dataset")
    elif isinstance(params, EmbedParams) and params.model_id is not None:
        if session.get(Model, params.model_id) is None:
            raise LookupError(f"no model {params.model_id}")
    return queue.enqueue(
        session,
        params.kind,
        params.model_dump(mode="json", exclude_none=True),
        created_by=created_by,
        max_attempts=settings.job_max_attempts,
    )


def _existing(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
