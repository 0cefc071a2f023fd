"""Job kinds for the worker tests, loaded by the child process through ``CROSSMODAL_JOB_PLUGINS``."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from app.jobs.kinds import register

log = logging.getLogger("tests.jobs")


def record(ctx, params: dict) -> dict:
    """Append one line a run to ``params["ledger"]`` (job, worker, attempt, pid, $CROSSMODAL_TEST_MARK):
    who ran what, how often, in which environment."""
    with open(params["ledger"], "a") as f:
        mark = os.environ.get("CROSSMODAL_TEST_MARK", "-")
        f.write(f"{ctx.job_id} {ctx.lease.worker_id} {ctx.lease.attempt} {os.getpid()} {mark}\n")
    log.info("recorded job %d", ctx.job_id)
    return {"job": ctx.job_id}


def steps(ctx, params: dict) -> dict:
    """``params["n"]`` steps of ``params["dt"]`` seconds, resuming after the last step a file says is done.

    With ``params["hold_at"]``, the first attempt stops after that step as if busy with the next, until it is
    killed: a test that kills its worker mid-job then does not race the job's end."""
    progress_file = Path(params["progress_file"])
    done = int(progress_file.read_text()) if progress_file.exists() else 0
    Path(params.get("pid_file", os.devnull)).write_text(str(os.getpid())) if params.get("pid_file") else None
    resumed_from = done
    for step in range(done, params["n"]):
        time.sleep(params["dt"])
        progress_file.write_text(str(step + 1))
        ctx.progress("steps", step + 1, params["n"], unit="steps")
        while step + 1 == params.get("hold_at") and ctx.lease.attempt == 1:
            time.sleep(0.05)
    return {"resumed_from": resumed_from, "steps": params["n"]}


def fail(ctx, params: dict) -> dict:
    raise ValueError("this job always fails")


def die(ctx, params: dict) -> dict:
    """What an out-of-memory kill looks like from outside."""
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


for name, handler in {"test-record": record, "test-steps": steps, "test-fail": fail, "test-die": die}.items():
    register(name, handler)
