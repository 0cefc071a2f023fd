"""The jobs table as a queue, on SQLite and PostgreSQL: claims, leases, progress, cancel, recovery, retry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.db.models import Job
from app.db.session import make_session_factory
from app.jobs import queue


def test_claim_hands_each_job_out_once_and_counts_attempts(session):
    first = queue.enqueue(session, "ingest", {"source": "/data/in"})
    second = queue.enqueue(session, "finetune", {"config": {}})
    session.commit()
    assert (first.status, first.progress, first.attempts) == ("queued", 0.0, 0)
    a = queue.claim(session, "worker-a")
    session.commit()
    b = queue.claim(session, "worker-b")
    session.commit()
    assert (a.id, b.id) == (first.id, second.id)
    assert (a.status, a.worker_id, a.attempts) == ("running", "worker-a", 1)
    assert a.started_at is not None and a.heartbeat_at is not None
    assert queue.claim(session, "worker-c") is None


def test_claim_filters_by_kind(session):
    queue.enqueue(session, "finetune", {})
    ingest = queue.enqueue(session, "ingest", {})
    session.commit()
    assert queue.claim(session, "w", kinds=["ingest", "reindex"]).id == ingest.id
    assert queue.claim(session, "w", kinds=["reindex"]) is None


def test_progress_heartbeat_log_and_finish_need_the_lease(session):
    job = queue.enqueue(session, "ingest", {"n": 3})
    session.commit()
    lease = queue.lease_of(queue.claim(session, "w"))
    first_beat = job.heartbeat_at
    assert queue.heartbeat(session, lease)
    assert queue.report_progress(session, lease, 0.5, "embed: 150/300", {"stage": "embed", "done": 150})
    queue.append_log(session, lease, [f"line {i}" for i in range(250)])
    session.commit()
    session.refresh(job)
    assert (job.progress, job.message, job.details["done"]) == (0.5, "embed: 150/300", 150)
    assert job.heartbeat_at >= first_beat and len(job.log) == queue.LOG_LINES and job.log[-1] == "line 249"

    stale = queue.Lease(job.id, "w", lease.attempt + 1)  # another attempt's lease, or another worker's
    assert not queue.heartbeat(session, stale) and not queue.finish(session, stale, "failed", error="no")
    assert queue.finish(session, lease, "succeeded", result={"added": 300})
    session.commit()
    session.refresh(job)
    assert (job.status, job.progress, job.result) == ("succeeded", 1.0, {"added": 300})
    assert job.finished_at >= job.started_at
    assert not queue.finish(session, lease, "failed", error="twice")  # finished once, and only once
    with pytest.raises(ValueError, match="finishes"):
        queue.finish(session, lease, "running")


def test_cancel_a_queued_job_at_once_and_ask_a_running_one(session):
    waiting = queue.enqueue(session, "ingest", {})
    running = queue.enqueue(session, "ingest", {})
    session.commit()
    queue.request_cancel(session, waiting.id)
    session.commit()
    assert waiting.status == "cancelled" and waiting.finished_at is not None
    lease = queue.lease_of(queue.claim(session, "w"))
    assert lease.job_id == running.id and not queue.cancel_requested(session, running.id)
    queue.request_cancel(session, running.id)
    session.commit()
    assert running.status == "running" and queue.cancel_requested(session, running.id)
    assert queue.heartbeat(session, lease)  # still this worker's until it stops
    with pytest.raises(LookupError):
        queue.request_cancel(session, 10**9)


def test_dead_workers_jobs_are_requeued_until_max_attempts_then_failed(session):
    job = queue.enqueue(session, "finetune", {}, max_attempts=2)
    session.commit()
    for attempt in (1, 2):
        claimed = queue.claim(session, f"worker-{attempt}")
        assert claimed.id == job.id and claimed.attempts == attempt
        session.commit()
        assert queue.requeue_stale(session, timedelta(minutes=5)) == ([], [])
        job.heartbeat_at = datetime.now(UTC) - timedelta(minutes=10)
        session.commit()
        requeued, failed = queue.requeue_stale(session, timedelta(minutes=5))
        session.commit()
        if attempt == 1:
            assert (requeued, failed) == ([job.id], []) and (job.status, job.worker_id) == ("queued", None)
            assert "stopped heart-beating" in job.message
        else:
            assert (requeued, failed) == ([], [job.id]) and job.status == "failed"
            assert "gave up" in job.error and "attempt 2 of 2" in job.error
    assert queue.claim(session, "alive") is None


def test_a_released_job_does_not_use_up_an_attempt(session):
    job = queue.enqueue(session, "ingest", {})
    session.commit()
    lease = queue.lease_of(queue.claim(session, "w"))
    assert queue.release(session, lease, "shutting down")
    session.commit()
    session.refresh(job)
    assert (job.status, job.attempts) == ("queued", 0)


def test_retry_queues_a_failed_job_afresh(session):
    job = queue.enqueue(session, "ingest", {})
    session.commit()
    with pytest.raises(ValueError, match="only failed or cancelled"):
        queue.retry(session, job.id)
    lease = queue.lease_of(queue.claim(session, "w"))
    queue.finish(session, lease, "failed", error="boom")
    session.commit()
    queue.retry(session, job.id)
    session.commit()
    assert (job.status, job.attempts, job.error, job.finished_at) == ("queued", 0, None, None)


def test_list_jobs_newest_first_with_filters(session):
    ids = [queue.enqueue(session, kind, {}).id for kind in ("ingest", "finetune", "ingest")]
    session.commit()
    jobs, count = queue.list_jobs(session)
    assert [j.id for j in jobs] == ids[::-1] and count == 3
    jobs, count = queue.list_jobs(session, kind="ingest", limit=1)
    assert [j.id for j in jobs] == [ids[2]] and count == 2
    assert queue.list_jobs(session, status="running") == ([], 0)


def test_concurrent_workers_never_share_a_job(engine):
    factory = make_session_factory(engine)
    with factory() as setup:
        for i in range(30):
            queue.enqueue(setup, "ingest", {"i": i})
        setup.commit()

    def drain(worker_id: str) -> list[int]:
        claimed = []
        with factory() as session:
            while (job := queue.claim(session, worker_id)) is not None:
                session.commit()
                claimed.append(job.id)
        return claimed

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(drain, ["w0", "w1", "w2"]))
    every = [job_id for claimed in results for job_id in claimed]
    assert len(every) == 30 and len(set(every)) == 30


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SKIP LOCKED is PG-only
def test_claim_skips_rows_locked_by_another_worker(engine):
    factory = make_session_factory(engine)
    with factory() as setup:
        ids = [queue.enqueue(setup, "ingest", {"i": i}).id for i in range(2)]
        setup.commit()

    with factory() as worker_a, factory() as worker_b:
        worker_b.execute(text("SET lock_timeout = '5s'"))  # fail, rather than hang, if it waits
        a = queue.claim(worker_a, "a")  # not committed: the row stays locked
        b = queue.claim(worker_b, "b")  # must not wait for a, nor take its job
        assert (a.id, b.id) == (ids[0], ids[1])
        assert queue.claim(worker_b, "b") is None  # job 0 is locked, job 1 is taken
        worker_a.rollback()  # worker a dies before committing: its job is free again
        worker_b.commit()
        assert queue.claim(worker_b, "b").id == ids[0]
        worker_b.commit()
    with factory() as session:
        assert session.get(Job, ids[0]).attempts == 1  # the rolled-back claim did not count
