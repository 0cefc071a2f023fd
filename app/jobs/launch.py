"""How a worker starts the process that runs one attempt of a job: forked from a process that has
already imported what jobs need.

``python -m app.jobs.child`` started afresh pays for an interpreter and the imports of torch,
open_clip (which pulls in transformers and torchvision), FAISS and our packages before the job does
anything: 1.5 s for the lightest job kind and 11-15 s for a fine-tune on a 2-core machine, every job.
The standard library's ``forkserver`` start method imports them once per worker (:data:`PRELOAD`, in a
server process started at the first launch) and forks a fresh process from it for each attempt,
in milliseconds.

What a job's process was before, it still is: a process of its own (a crash, a hung library or an
out-of-memory kill takes only it), with the worker's environment at the time of the launch (set
before anything of the job runs; variables that libraries read at import time, such as
``OMP_NUM_THREADS``, are those the worker had when the server started), its output in the attempt's
log file, and SIGKILLed when the worker dies (``die_with``: its parent is the fork server, which
lives as long as a process it forked does).
The worker waits for the server to be ready (:func:`ready`) before it claims its first job, so
that no lease goes without a heartbeat while the imports run. ``CROSSMODAL_JOB_START=exec``
starts ``python -m app.jobs.child`` afresh for each job instead.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from app.jobs import child
from app.jobs.kinds import builtin_handler_modules
from crossmodal_kernel.processes import die_with_parent

# Libraries that training and evaluation import where they use them (kept off the API's import path).
HANDLER_LIBRARIES = ("torchvision.transforms", "sklearn.linear_model")


def preload(kinds: Collection[str] | None = None) -> list[str]:
    """What the fork server imports once: the child's own module, the built-in handlers of ``kinds``
    (None: every kind) and, with any of them, :data:`HANDLER_LIBRARIES`."""
    handlers = builtin_handler_modules(kinds)
    return ["app.jobs.child", *handlers, *(HANDLER_LIBRARIES if handlers else ())]


PRELOAD = preload()


class JobProcess(Protocol):
    """What the worker needs of a job's process (``subprocess.Popen`` has it; :class:`Forked` too)."""

    returncode: int | None

    def wait(self, timeout: float | None = None) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class Forked:
    """A job's process forked by the fork server, with ``subprocess.Popen``'s ``wait``/``returncode``:
    ``wait`` raises ``subprocess.TimeoutExpired`` when it is still running; a negative return code is
    the signal that ended it."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self.process = process
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        code = self.process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired("job process", timeout or 0.0)
        self.returncode = code
        return code

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()


_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)
_ready_lock = threading.Lock()
_ready = False


def ready(mode: str = "fork", kinds: Collection[str] | None = None) -> None:
    """Start the fork server and wait until it has imported ``preload(kinds)``: the first call in a process
    forks one empty process from it and takes those seconds; later calls return at once (a server
    that died is started again by the next :func:`start`). What a server imported is only a head start:
    a job of another kind imports its handler in its own process."""
    global _ready
    if mode != "fork" or _ready:
        return
    with _ready_lock:
        if not _ready:
            _context.set_forkserver_preload(preload(kinds))
            probe = _context.Process(target=_nothing)
            probe.start()
            probe.join()
            _ready = True


def start(argv: list[str], env: dict[str, str], log_path: Path, mode: str = "fork") -> JobProcess:
    """Start ``python -m app.jobs.child ARGV`` with environment ``env``, its output appended to
    ``log_path``: forked from the fork server, or exec'd afresh with ``mode="exec"``."""
    if mode == "exec":
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "app.jobs.child", *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=die_with_parent,  # runs in the child between fork and exec
            )
    process = _context.Process(target=child.forked_main, args=(argv, env, str(log_path), os.getpid()), daemon=False)
    process.start()
    return Forked(process)


def _nothing() -> None:
    pass
