"""``crossmodal worker``: claim jobs, run each in a child process, keep its lease alive, recover the dead.

The loop, claiming and retries are ours rather than a task-queue library's because the embedded
default is SQLite and the production one PostgreSQL, and none of the well-kept queues (Celery, RQ,
Dramatiq, arq: Redis or RabbitMQ brokers; procrastinate, PgQueuer: PostgreSQL only) serves both
from the database the service already has (docs/design.md).

One iteration: put back the jobs of workers that stopped heart-beating (or fail them after
``max_attempts``), claim the oldest queued job, start ``app.jobs.child`` for it in a process of its own
(forked from a server that has imported what jobs need: ``app.jobs.launch``), and
heart-beat every ``job_heartbeat_seconds`` until the child exits. The child records the outcome;
the worker records only what the child could not: a crash (exit code and the tail of its stderr).
A lost lease (this worker was presumed dead) kills the child at once, so one job never runs twice.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from app.config import Settings, settings_env
from app.db.models import JobStatus
from app.jobs import launch, queue
from app.jobs.child import EXIT_REQUEUE
from app.jobs.kinds import check_kinds

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30.0  # how long a child gets to stop cleanly (a fine-tune saves a checkpoint)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, settings: Settings, session_factory: sessionmaker, worker_id: str | None = None):
        self.settings = settings
        self.session_factory = session_factory
        self.worker_id = worker_id or new_worker_id()
        self.stop = threading.Event()
        self.kinds = settings.claimed_kinds  # None: every kind
        if self.kinds is not None:
            check_kinds(self.kinds)

    def run(self, max_jobs: int | None = None, idle_exit: bool = False) -> int:
        """Work until :attr:`stop` is set (or ``max_jobs`` ran, or the queue is empty with ``idle_exit``)."""
        ran = 0
        log.info("worker %s started", self.worker_id)
        while not self.stop.is_set() and (max_jobs is None or ran < max_jobs):
            if self.run_once():
                ran += 1
            elif idle_exit:
                break
            else:
                self.stop.wait(self.settings.job_poll_seconds)
        log.info("worker %s stopped after %d job(s)", self.worker_id, ran)
        return ran

    def run_once(self) -> bool:
        """Recover dead workers' jobs, then run one queued job; False when there was none."""
        with self.session_factory() as session:
            requeued, failed = queue.requeue_stale(session, timedelta(seconds=self.settings.job_stale_seconds))
            session.commit()
        for job_id in requeued:
            log.warning("job %d: its worker stopped heart-beating; requeued", job_id)
        for job_id in failed:
            log.error("job %d: its worker stopped heart-beating too often; failed", job_id)
        launch.ready(self.settings.job_start, self.kinds)  # before a claim: a lease must not wait on the imports
        with self.session_factory() as session:
            job = queue.claim(session, self.worker_id, self.kinds)
            session.commit()
            if job is None:
                return False
            lease = queue.lease_of(job)
            kind = job.kind
        log.info("job %d (%s): attempt %d", lease.job_id, kind, lease.attempt)
        self._supervise(lease)
        return True

    def _supervise(self, lease: queue.Lease) -> None:
        stderr_path = self._attempt_log(lease)
        child = launch.start(
            [str(lease.job_id), lease.worker_id, str(lease.attempt)],
            {**os.environ, **settings_env(self.settings)},
            stderr_path,
            self.settings.job_start,
        )
        outcome = self._watch(child, lease)
        code = child.wait()  # it has exited: _watch waited for it
        if outcome == "lost":
            log.warning("job %d: lease lost (presumed dead); child stopped", lease.job_id)
        elif outcome == "killed":
            with self.session_factory() as session:
                queue.finish(
                    session, lease, JobStatus.CANCELLED, error="cancelled: stopped by force after the grace period"
                )
                session.commit()
        elif outcome == "stopping" or code == EXIT_REQUEUE:
            with self.session_factory() as session:
                queue.release(session, lease, "requeued: its worker shut down")
                session.commit()
        elif code != 0:
            why = f"exit code {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
            if code == -signal.SIGKILL:
                why += " (out of memory?)"
            error = f"the job's process died ({why}); last output:\n{_tail(stderr_path)}"
            with self.session_factory() as session:
                queue.finish(session, lease, JobStatus.FAILED, error=error)
                session.commit()
            log.error("job %d: %s", lease.job_id, why)

    def _watch(self, child: launch.JobProcess, lease: queue.Lease) -> str:
        """Heart-beat while the child runs: ``done``, ``lost`` (lease gone), ``stopping`` (worker stopping)
        or ``killed`` (it ignored a cancel request for ``STOP_GRACE_SECONDS``)."""
        cancel_seen: float | None = None
        while True:
            try:
                child.wait(timeout=self.settings.job_heartbeat_seconds)
                return "done"
            except subprocess.TimeoutExpired:
                pass
            with self.session_factory() as session:
                held = queue.heartbeat(session, lease)
                session.commit()
                cancelled = held and queue.cancel_requested(session, lease.job_id)
            if not held:  # finished by the child just now, or taken over by another attempt
                try:
                    child.wait(timeout=max(5 * self.settings.job_heartbeat_seconds, 15.0))  # exiting
                    return "done"
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                    return "lost"
            if self.stop.is_set():
                _stop(child)
                return "stopping" if child.returncode != 0 else "done"
            if cancelled:
                cancel_seen = cancel_seen or time.monotonic()
                if time.monotonic() - cancel_seen > STOP_GRACE_SECONDS:  # the child checks between steps
                    child.kill()
                    child.wait()
                    return "killed"

    def _attempt_log(self, lease: queue.Lease) -> Path:
        folder = self.settings.data_dir / "jobs" / str(lease.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"attempt-{lease.attempt}.log"


def _stop(child: launch.JobProcess) -> None:
    """SIGTERM (the job saves what it can and exits), then SIGKILL after the grace period."""
    child.terminate()
    try:
        child.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def start_embedded(settings: Settings, session_factory: sessionmaker) -> tuple[Worker, threading.Thread]:
    """A worker on a thread of this process (``crossmodal serve`` without ``--no-worker``)."""
    worker = Worker(settings, session_factory)
    thread = threading.Thread(target=worker.run, name="crossmodal-worker", daemon=True)
    thread.start()
    return worker, thread
