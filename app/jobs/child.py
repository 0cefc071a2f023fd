"""``python -m app.jobs.child JOB WORKER ATTEMPT``: run one attempt of a job, in a process of its own.

The worker (``app.jobs.worker``) claims the job and starts this process; a crash, an out-of-memory
kill or a hung library here never takes the worker or the API down. This process writes the job's
progress, its log tail and its outcome, each conditional on the lease ``(job, worker, attempt)``;
the worker only heart-beats and watches the exit code.

Exit codes: 0 the outcome is recorded; ``EXIT_REQUEUE`` the worker is shutting down and the job
should go back to the queue; anything else a crash, which the worker records as a failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import traceback
from collections import deque

from app.runtime import apply_runtime_defaults

apply_runtime_defaults()

# ruff: noqa: E402
from app.config import Settings
from app.db.models import Job, JobStatus
from app.db.session import make_engine, make_session_factory
from app.jobs import queue
from app.jobs.context import JobCancelled, JobContext, JobInterrupted, JobRefused, LeaseLost
from app.jobs.kinds import handler_for
from crossmodal_kernel.processes import die_with, die_with_parent

EXIT_REQUEUE = 75  # EX_TEMPFAIL
log = logging.getLogger("app.jobs.child")


class _LogTail(logging.Handler):
    """Keeps the job's last log lines and writes them to its row now and then."""

    def __init__(self, ctx_getter, every: float = 1.0):
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=queue.LOG_LINES)
        self.pending: list[str] = []
        self.ctx_getter, self.every = ctx_getter, every
        self.pending_lock = threading.Lock()  # not `lock`: logging.Handler holds that one around emit
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        with self.pending_lock:
            self.pending.append(self.format(record))

    def flush_to_db(self) -> None:
        ctx = self.ctx_getter()
        with self.pending_lock:
            lines, self.pending = self.pending, []
        if ctx is None or not lines:
            return
        try:
            with ctx.session_factory() as session:
                queue.append_log(session, ctx.lease, lines)
                session.commit()
        except Exception:  # the log tail is a courtesy; the job goes on
            pass


def run(job_id: int, worker_id: str, attempt: int, settings: Settings | None = None) -> int:
    settings = settings or Settings()
    engine = make_engine(settings.resolved_database_url)
    session_factory = make_session_factory(engine)
    lease = queue.Lease(job_id, worker_id, attempt)
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None or (job.status, job.worker_id, job.attempts) != (JobStatus.RUNNING, worker_id, attempt):
            log.error("job %s is not this attempt's to run", job_id)
            return 0
        kind, params = job.kind, dict(job.params or {})
    ctx = JobContext(lease, kind, params, settings, session_factory)
    tail = _LogTail(lambda: ctx)
    logging.getLogger().addHandler(tail)
    stop_flushing = threading.Event()
    flusher = threading.Thread(target=lambda: _flush_every(tail, stop_flushing), daemon=True)
    flusher.start()

    def on_sigterm(_signum, _frame):
        ctx.interrupted = True  # seen at the handler's next progress call or step

    signal.signal(signal.SIGTERM, on_sigterm)
    status, result, error, code = JobStatus.FAILED, None, None, 0
    try:
        log.info("job %d (%s), attempt %d on %s", job_id, kind, attempt, worker_id)
        result = handler_for(kind)(ctx, params)
        status = JobStatus.SUCCEEDED
    except JobCancelled as e:
        status, result = JobStatus.CANCELLED, {**ctx.notes, "cancelled": str(e)}
    except JobInterrupted:
        code = EXIT_REQUEUE
    except LeaseLost as e:
        log.warning("%s", e)
        return 0
    except JobRefused as e:  # a decision, not a crash: its reason, no traceback
        log.info("job %d refused: %s", job_id, e)
        status, result, error = JobStatus.FAILED, {**ctx.notes, "refused": str(e)}, str(e)
    except Exception as e:
        log.exception("job %d failed", job_id)
        status, result = JobStatus.FAILED, ctx.notes or None
        error = f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exc(limit=20))[-4000:]
    finally:
        stop_flushing.set()
        flusher.join()
        tail.flush_to_db()
        logging.getLogger().removeHandler(tail)  # run in-process (tests): later jobs keep their own tails
    if code == 0:
        with session_factory() as session:
            queue.finish(session, lease, status, result=result, error=error)
            session.commit()
    engine.dispose()
    return code


def _flush_every(tail: _LogTail, stop: threading.Event) -> None:
    while not stop.wait(tail.every):
        tail.flush_to_db()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.jobs.child")
    parser.add_argument("job_id", type=int)
    parser.add_argument("worker_id")
    parser.add_argument("attempt", type=int)
    args = parser.parse_args(argv)
    die_with_parent()
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run(args.job_id, args.worker_id, args.attempt, settings)


def forked_main(argv: list[str], env: dict[str, str], log_path: str, worker_pid: int) -> None:
    """``main`` in a process forked by the worker's fork server (``app.jobs.launch``): first the
    worker's environment as it was at the launch, the attempt's log file as stdout and stderr, and
    death with the worker (process ``worker_pid``) rather than with the fork server."""
    die_with(worker_pid)
    os.environ.clear()
    os.environ.update(env)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.exit(main(argv))


if __name__ == "__main__":
    sys.exit(main())
