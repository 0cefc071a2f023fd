"""Admin: start jobs, follow them (polling or server-sent events), cancel and retry them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse

from app.api.admin_schemas import JobPublic, JobsPublic
from app.api.auth import AdminDep
from app.api.deps import DbId, Limit, Offset, SessionDep, SettingsDep
from app.api.errors import ApiError
from app.api.submit import ADMIN_ERRORS, queue_job
from app.db.models import Job
from app.jobs import queue
from app.jobs.kinds import JobParams

router = APIRouter(prefix="/jobs", tags=["admin: jobs"])
EVENT_POLL_SECONDS = 0.5


def job_or_404(session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id}")
    return job


@router.post("", status_code=202, response_model=JobPublic, responses=ADMIN_ERRORS)
def start_job(params: JobParams, key: AdminDep, session: SessionDep, settings: SettingsDep) -> JobPublic:
    """Queue a job: `ingest`, `embed`, `reindex`, `finetune`, `evaluate` or `promote` (see the body schemas)."""
    return queue_job(session, settings, params, created_by=key.name)


@router.get("", response_model=JobsPublic, responses=ADMIN_ERRORS)
def list_jobs(
    _key: AdminDep,
    session: SessionDep,
    status: str | None = Query(None, description="queued, running, succeeded, failed or cancelled"),
    kind: str | None = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> JobsPublic:
    """Newest first. A fine-tune's `details.series` (its curves) is left out here: `GET /jobs/{id}` has it."""
    jobs, count = queue.list_jobs(session, status=status, kind=kind, offset=offset, limit=limit)
    return JobsPublic(data=[_without_series(JobPublic.model_validate(j)) for j in jobs], count=count)


def _without_series(job: JobPublic) -> JobPublic:
    if job.details and "series" in job.details:
        job.details = {k: v for k, v in job.details.items() if k != "series"}
    return job


@router.get("/{job_id:int}", response_model=JobPublic, responses=ADMIN_ERRORS)
def get_job(job_id: DbId, _key: AdminDep, session: SessionDep) -> JobPublic:
    return JobPublic.model_validate(job_or_404(session, job_id))


@router.post("/{job_id:int}/cancel", status_code=202, response_model=JobPublic, responses=ADMIN_ERRORS)
def cancel_job(job_id: DbId, _key: AdminDep, session: SessionDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops at its next step or batch."""
    job_or_404(session, job_id)
    job = queue.request_cancel(session, job_id)
    session.commit()
    return JobPublic.model_validate(job)


@router.post("/{job_id:int}/retry", status_code=202, response_model=JobPublic, responses=ADMIN_ERRORS)
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
    responses={**ADMIN_ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "`job` events, then `end`"}},
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
