"""Admin: start jobs, follow them (polling or server-sent events), cancel and retry them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse

from app.admin_schemas import JobPublic, JobsPublic
from app.api.deps import DbId, Limit, Offset, SessionDep, SettingsDep
from app.auth import AdminDep
from app.db.models import Job
from app.errors import ApiError
from app.jobs import queue
from app.jobs.kinds import JobParams
from app.jobs.submit import submit
from app.schemas import ErrorBody

router = APIRouter(prefix="/jobs", tags=["admin: jobs"])
ERRORS = {status: {"model": ErrorBody} for status in (401, 403, 404, 409, 422)}
EVENT_POLL_SECONDS = 0.5


def job_or_404(session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")
    return job


@router.post("", status_code=202, response_model=JobPublic, responses=ERRORS)
def start_job(params: JobParams, key: AdminDep, session: SessionDep, settings: SettingsDep) -> JobPublic:
    """Queue a job: `ingest`, `embed`, `reindex`, `finetune`, `evaluate` or `promote` (see the body schemas)."""
    try:
        job = submit(session, settings, params, created_by=key.name)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ApiError(422, "invalid_config", f"{where}: {first['msg']}") from e
    except PermissionError as e:
        raise ApiError(403, "path_not_allowed", str(e)) from e
    except FileNotFoundError as e:
        raise ApiError(422, "not_found", str(e)) from e
    except LookupError as e:
        raise ApiError(404, "model_not_found", str(e.args[0])) from e
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from e
    session.commit()
    return JobPublic.model_validate(job)


@router.get("", response_model=JobsPublic, responses=ERRORS)
def list_jobs(
    _key: AdminDep,
    session: SessionDep,
    status: str | None = Query(None, description="queued, running, succeeded, failed or cancelled"),
    kind: str | None = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> JobsPublic:
    """Newest first."""
    jobs, count = queue.list_jobs(session, status=status, kind=kind, offset=offset, limit=limit)
    return JobsPublic(data=[JobPublic.model_validate(j) for j in jobs], count=count)


@router.get("/{job_id:int}", response_model=JobPublic, responses=ERRORS)
def get_job(job_id: DbId, _key: AdminDep, session: SessionDep) -> JobPublic:
    return JobPublic.model_validate(job_or_404(session, job_id))


@router.post("/{job_id:int}/cancel", status_code=202, response_model=JobPublic, responses=ERRORS)
def cancel_job(job_id: DbId, _key: AdminDep, session: SessionDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops at its next step or batch."""
    job_or_404(session, job_id)
    job = queue.request_cancel(session, job_id)
    session.commit()
    return JobPublic.model_validate(job)


@router.post("/{job_id:int}/retry", status_code=202, response_model=JobPublic, responses=ERRORS)
def retry_job(job_id: DbId, _key: AdminDep, session: SessionDep) -> JobPublic:
    """Queue a failed or cancelled job again (a fine-tune resumes from its last checkpoint)."""
    job_or_404(session, job_id)
    try:
        job = queue.retry(session, job_id)
    except ValueError as e:
        raise ApiError(409, "not_retryable", str(e)) from e
    session.commit()
    return JobPublic.model_validate(job)


@router.get(
    "/{job_id:int}/events",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "`job` events, then `end`"}},
)
async def follow_job(job_id: DbId, request: Request, _key: AdminDep) -> EventSourceResponse:
    """Server-sent events: a `job` event (the job as JSON) whenever it changes, and `end` once it finished."""
    factory = request.app.state.session_factory

    def snapshot() -> dict | None:
        with factory() as session:
            job = session.get(Job, job_id)
            return None if job is None else JobPublic.model_validate(job).model_dump(mode="json")

    if await run_in_threadpool(snapshot) is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")

    async def events() -> AsyncIterator[dict]:
        last = None
        while True:
            current = await run_in_threadpool(snapshot)
            if current is None:
                return
            if current != last:
                yield {"event": "job", "data": json.dumps(current)}
                last = current
            if current["status"] in queue.FINISHED:
                yield {"event": "end", "data": json.dumps({"status": current["status"]})}
                return
            await asyncio.sleep(EVENT_POLL_SECONDS)

    return EventSourceResponse(events(), ping=15)
