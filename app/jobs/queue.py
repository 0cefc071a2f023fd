"""The jobs table as a queue: enqueue, claim, heartbeat, progress, cancel, finish, requeue the dead, retry.

A running job is *leased* to one worker: ``worker_id`` names it and ``attempts`` numbers the
claim. Every write a worker (or its job's child process) makes about a running job is
conditional on that lease, so a worker presumed dead that comes back cannot overwrite the
attempt that replaced it: nothing runs twice at once, and nothing finishes twice.

The caller owns the transaction and commits, as in ``app.db.crud``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, func, select, update
from sqlalchemy.orm import Session

from app.db.models import Job, JobStatus, utcnow

FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
LOG_LINES = 200  # the log tail a job keeps


@dataclass(frozen=True)
class Lease:
    """Which claim of a job a worker holds."""

    job_id: int
    worker_id: str
    attempt: int


def enqueue(
    session: Session,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    created_by: str | None = None,
    max_attempts: int = 3,
) -> Job:
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    job = Job(kind=kind, params=params or {}, created_by=created_by, max_attempts=max_attempts, attempts=0)
    session.add(job)
    session.flush()
    return job


def claim(session: Session, worker_id: str, kinds: Sequence[str] | None = None) -> Job | None:
    """Take the oldest queued job for this worker, or None when there is nothing to do.

    On PostgreSQL the candidate row is locked with SKIP LOCKED, so concurrent
    workers pass over each other's picks instead of queueing behind them; the row
    stays locked until the caller commits, which it should do at once. SQLite has
    no row locks (FOR UPDATE renders as nothing); its single writer lock and the
    ``status = 'queued'`` guard on the UPDATE keep a job from being claimed twice.
    """
    query = (
        select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.id).limit(1).with_for_update(skip_locked=True)
    )
    if kinds is not None:
        query = query.where(Job.kind.in_(list(kinds)))
    for _ in range(5):  # only loops if another writer took our pick in between
        job_id = session.scalar(query)
        if job_id is None:
            return None
        now = utcnow()
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.RUNNING,
                worker_id=worker_id,
                started_at=now,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                error=None,
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(claimed) == 1:
            return session.get(Job, job_id, populate_existing=True)
    return None


def lease_of(job: Job) -> Lease:
    if job.status != JobStatus.RUNNING or job.worker_id is None:
        raise ValueError(f"job {job.id} is {job.status}, not running")
    return Lease(job.id, job.worker_id, job.attempts)


def _update_held(session: Session, lease: Lease, **values: Any) -> bool:
    """Update the job only while ``lease`` still holds it; False when it does not."""
    done = session.execute(
        update(Job).where(*_held(lease)).values(**values).execution_options(synchronize_session=False)
    )
    return _rowcount(done) == 1


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE matched. Session.execute types every result as a Result; DML gives a CursorResult."""
    return cast(CursorResult[Any], result).rowcount


def _held(lease: Lease):
    return (
        Job.id == lease.job_id,
        Job.status == JobStatus.RUNNING,
        Job.worker_id == lease.worker_id,
        Job.attempts == lease.attempt,
    )


def heartbeat(session: Session, lease: Lease) -> bool:
    """Record that the worker is alive; False when it no longer holds the job (requeued, cancelled, finished)."""
    return _update_held(session, lease, heartbeat_at=utcnow())


def report_progress(
    session: Session, lease: Lease, fraction: float | None, message: str | None, details: dict[str, Any] | None
) -> bool:
    values: dict[str, Any] = {"message": message, "details": details}
    if fraction is not None:
        values["progress"] = min(max(float(fraction), 0.0), 1.0)
    return _update_held(session, lease, **values)


def append_log(session: Session, lease: Lease, lines: Sequence[str], keep: int = LOG_LINES) -> None:
    """Add ``lines`` to the job's bounded log tail (only while ``lease`` holds it)."""
    if not lines:
        return
    job = session.scalars(select(Job).where(*_held(lease)).with_for_update()).first()
    if job is not None:
        job.log = [*(job.log or []), *lines][-keep:]
        session.flush()


def cancel_requested(session: Session, job_id: int) -> bool:
    return session.scalar(select(Job.cancel_requested_at).where(Job.id == job_id)) is not None


def request_cancel(session: Session, job_id: int) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop (it checks between steps)."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise LookupError(f"no job {job_id}")
    if job.status == JobStatus.QUEUED:
        job.status, job.finished_at, job.message = JobStatus.CANCELLED, utcnow(), "cancelled before it started"
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLED) and job.cancel_requested_at is None:
        job.cancel_requested_at = utcnow()
    session.flush()
    return job


def finish(
    session: Session,
    lease: Lease,
    status: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """End the attempt ``lease`` holds; False (and no change) when the lease was lost meanwhile."""
    if status not in FINISHED:
        raise ValueError(f"a job finishes as one of {sorted(FINISHED)}, got {status!r}")
    values: dict[str, Any] = {"status": status, "result": result, "error": error, "finished_at": utcnow()}
    if status == JobStatus.SUCCEEDED:
        values["progress"] = 1.0
    return _update_held(session, lease, **values)


def release(session: Session, lease: Lease, message: str) -> bool:
    """Give a running job back to the queue (a worker shutting down); the attempt does not count."""
    return _update_held(
        session, lease, status=JobStatus.QUEUED, worker_id=None, attempts=Job.attempts - 1, message=message
    )


def requeue_stale(session: Session, stale_after: timedelta) -> tuple[list[int], list[int]]:
    """Running jobs whose worker stopped heart-beating: requeued while attempts remain, else failed.

    Job handlers resume from what they recorded (a fine-tune from its checkpoint, embedding
    from its finished shards). Returns ``(requeued ids, failed ids)``.
    """
    cutoff = utcnow() - stale_after
    stale = session.scalars(
        select(Job).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff).with_for_update(skip_locked=True)
    ).all()
    requeued, failed = [], []
    for job in stale:
        lost = f"worker {job.worker_id} stopped heart-beating (attempt {job.attempts} of {job.max_attempts})"
        if job.attempts < job.max_attempts:
            job.status, job.worker_id, job.message = JobStatus.QUEUED, None, f"requeued: {lost}"
            requeued.append(job.id)
        else:
            job.status, job.finished_at, job.error = JobStatus.FAILED, utcnow(), f"gave up: {lost}"
            failed.append(job.id)
    session.flush()
    return requeued, failed


def retry(session: Session, job_id: int) -> Job:
    """Queue a failed or cancelled job again, with its attempts counted afresh."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise LookupError(f"no job {job_id}")
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise ValueError(f"job {job_id} is {job.status}: only failed or cancelled jobs can be retried")
    job.status, job.attempts, job.worker_id = JobStatus.QUEUED, 0, None
    job.error = job.result = job.cancel_requested_at = job.finished_at = None
    job.message = "queued again (retry)"
    session.flush()
    return job


def list_jobs(
    session: Session, *, status: str | None = None, kind: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[Job], int]:
    """Newest first."""
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    count = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(Job.id.desc()).offset(offset).limit(limit)).all()
    return list(rows), int(count or 0)
