"""What a running job sees: its parameters and folder, a progress reporter, cooperative cancellation.

Progress writes and cancel checks go to the database at most every ``THROTTLE`` seconds, so a
handler may call :meth:`JobContext.progress` on every batch. A cancel request (or the worker
shutting down) surfaces as an exception from ``progress`` / ``check``, at the next batch: the
handler stops within a batch's time and nothing it has committed is lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import sessionmaker

from app.config import Settings
from app.jobs import queue

log = logging.getLogger(__name__)

THROTTLE = 0.5  # seconds between progress writes / cancel checks


class JobCancelled(Exception):
    """An admin cancelled the job."""


class JobInterrupted(Exception):
    """The worker is shutting down: the job goes back to the queue and resumes elsewhere."""


class LeaseLost(Exception):
    """Another attempt owns the job now (this worker was presumed dead): stop without writing anything."""


class JobRefused(Exception):
    """The job decided not to act (a promotion that does not win): it fails with this one-line reason as its
    error and ``result.refused``, and no traceback."""


@dataclass
class _Stage:
    name: str
    started: float
    done: int = 0


@dataclass
class JobContext:
    lease: queue.Lease
    kind: str
    params: dict[str, Any]
    settings: Settings
    session_factory: sessionmaker
    interrupted: bool = False  # set by the child's SIGTERM handler
    _stage: _Stage | None = None
    _last_write: float = 0.0
    _last_check: float = 0.0
    _cancelled: bool = False
    notes: dict[str, Any] = field(default_factory=dict)  # what the handler wants in the result either way
    keep: dict[str, Any] = field(default_factory=dict)  # kept in ``details`` across stages (a fine-tune's series)

    @property
    def job_id(self) -> int:
        return self.lease.job_id

    @property
    def workdir(self) -> Path:
        """The job's own folder (kept across attempts: a resumed job finds what it wrote)."""
        path = self.settings.data_dir / "jobs" / str(self.job_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress(
        self,
        stage: str,
        done: int,
        total: int | None = None,
        *,
        unit: str = "items",
        fraction: float | None = None,
        message: str | None = None,
        force: bool = False,
    ) -> None:
        """Report ``done`` of ``total`` ``unit`` in ``stage``; raises when the job must stop."""
        now = time.monotonic()
        if self._stage is None or self._stage.name != stage:
            self._stage, force = _Stage(stage, now), True
        self._stage.done = done
        if fraction is None and total:
            fraction = done / total
        if force or now - self._last_write >= THROTTLE or (total is not None and done >= total):
            elapsed = now - self._stage.started
            rate = done / elapsed if elapsed > 0 and done else None
            eta = (total - done) / rate if rate and total is not None else None
            details = {**self.keep, "stage": stage, "done": done, "total": total, "unit": unit, "rate": rate}
            details["eta_s"] = eta
            text = message or (f"{stage}: {done}/{total} {unit}" if total is not None else f"{stage}: {done} {unit}")
            with self.session_factory() as session:
                held = queue.report_progress(session, self.lease, fraction, text, details)
                session.commit()
            self._last_write = now
            if not held:
                raise LeaseLost(f"job {self.job_id} attempt {self.lease.attempt} is no longer this worker's")
        self.check()

    def check(self) -> None:
        """Raise :class:`JobCancelled` / :class:`JobInterrupted` when the job must stop now."""
        if self.interrupted:
            raise JobInterrupted("the worker is shutting down")
        now = time.monotonic()
        if not self._cancelled and now - self._last_check >= THROTTLE:
            with self.session_factory() as session:
                self._cancelled = queue.cancel_requested(session, self.job_id)
            self._last_check = now
        if self._cancelled:
            raise JobCancelled("cancelled by an admin")

    def should_stop(self) -> bool:
        """The same decision as :meth:`check`, as a flag (for loops that stop cleanly themselves)."""
        try:
            self.check()
        except (JobCancelled, JobInterrupted):
            return True
        return False

    def allowed_path(self, value: str | Path, what: str) -> Path:
        """``value`` resolved, if it lies under an allowed root (the data dir or ``CROSSMODAL_ALLOWED_ROOTS``)."""
        return resolve_allowed(self.settings, value, what)


class PathNotAllowed(PermissionError):
    pass


def resolve_allowed(settings: Settings, value: str | Path, what: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not any(path == root or path.is_relative_to(root) for root in settings.roots):
        shown = ", ".join(str(r) for r in settings.roots)
        raise PathNotAllowed(f"{what} {path} is outside the allowed roots ({shown}); see CROSSMODAL_ALLOWED_ROOTS")
    return path
