"""The worker with real child processes: outcomes, crashes, cancel, a worker killed with SIGKILL, a race."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from app.config import settings_env
from app.db.models import Job
from app.jobs import launch, queue
from app.jobs.worker import Worker
from tests.helpers.service import stack, wait_for

FAST = dict(job_heartbeat_seconds=0.2, job_stale_seconds=2.0, job_poll_seconds=0.1)


@pytest.fixture
def env(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_JOB_PLUGINS", "tests.app.jobs.plugin_kinds")
    with stack(tmp_path, db_url, n=0, **FAST) as s:  # migrated, nothing ingested: the jobs are the test kinds
        yield s.settings, s.session_factory, tmp_path


def submit(sf, kind: str, params: dict, **kw) -> int:
    with sf() as session:
        job = queue.enqueue(session, kind, params, **kw)
        session.commit()
        return job.id


def job(sf, job_id: int) -> Job:
    with sf() as session:
        return session.get(Job, job_id)


@pytest.mark.parametrize("start", ["fork", "exec"])
def test_a_job_runs_in_its_own_process_and_records_its_outcome(env, start, monkeypatch):
    settings, sf, tmp = env
    settings = settings.model_copy(update={"job_start": start})
    launch.ready(start)  # a fork server already running: the job still gets the environment of its launch
    monkeypatch.setenv("CROSSMODAL_TEST_MARK", f"set-before-{start}")
    job_id = submit(sf, "test-record", {"ledger": str(tmp / "ledger")})
    assert Worker(settings, sf, "w1").run_once()
    done = job(sf, job_id)
    assert (done.status, done.result, done.attempts, done.progress) == ("succeeded", {"job": job_id}, 1, 1.0)
    line = (tmp / "ledger").read_text().split()
    assert line[:3] == [str(job_id), "w1", "1"] and int(line[3]) != os.getpid()
    assert line[4] == f"set-before-{start}"
    assert any("recorded job" in entry for entry in done.log)
    assert (settings.data_dir / "jobs" / str(job_id) / "attempt-1.log").is_file()  # the child's whole output


def test_a_failing_job_keeps_its_traceback(env):
    settings, sf, _ = env
    job_id = submit(sf, "test-fail", {})
    Worker(settings, sf).run_once()
    failed = job(sf, job_id)
    assert failed.status == "failed" and failed.error.startswith("ValueError: this job always fails")
    assert "Traceback" in failed.error


def test_a_crashed_child_fails_its_job_and_not_the_worker(env):
    settings, sf, tmp = env
    dead = submit(sf, "test-die", {})
    after = submit(sf, "test-record", {"ledger": str(tmp / "ledger")})
    worker = Worker(settings, sf)
    assert worker.run_once() and worker.run_once()
    crashed = job(sf, dead)
    assert crashed.status == "failed" and "killed by SIGKILL (out of memory?)" in crashed.error
    assert job(sf, after).status == "succeeded"


def test_cancel_stops_a_running_job_within_a_step(env):
    settings, sf, tmp = env
    job_id = submit(sf, "test-steps", {"n": 400, "dt": 0.05, "progress_file": str(tmp / "done")})
    worker = Worker(settings, sf)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    wait_for(lambda: job(sf, job_id).progress > 0)
    with sf() as session:
        queue.request_cancel(session, job_id)
        session.commit()
    asked = time.monotonic()
    thread.join(timeout=60)
    cancelled = job(sf, job_id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert time.monotonic() - asked < 10  # the handler checks at every step (0.05 s) and every 0.5 s reads the flag
    assert int((tmp / "done").read_text()) < 400


def _worker_process(settings, *args: str) -> subprocess.Popen:
    """`crossmodal worker` for the test kinds: its fork server imports none of the built-in handlers."""
    env = {**os.environ, **settings_env(settings)}
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--kinds", "test-record,test-steps", *args], env=env
    )


def test_a_worker_claims_only_its_kinds(env):
    settings, sf, tmp = env
    # exec: this process's fork server keeps what it imports (every handler) for the tests that need them
    settings = settings.model_copy(update={"job_kinds": "test-record", "job_start": "exec"})
    other = submit(sf, "test-fail", {})
    mine = submit(sf, "test-record", {"ledger": str(tmp / "ledger")})
    worker = Worker(settings, sf)
    assert worker.run_once() and not worker.run_once()
    assert job(sf, mine).status == "succeeded" and job(sf, other).status == "queued"


def test_a_worker_for_an_unknown_kind_does_not_start(env):
    settings, sf, _ = env
    with pytest.raises(ValueError, match=r"unknown job kinds \['fine-tune'\]; known: .*finetune"):
        Worker(settings.model_copy(update={"job_kinds": "fine-tune, ingest"}), sf)


def test_a_job_whose_worker_is_killed_is_resumed_by_another(env):
    settings, sf, tmp = env
    # the first attempt holds after step 5 until its worker is killed (a busy job, not a race with its end)
    params = {"n": 60, "dt": 0.01, "hold_at": 5, "progress_file": str(tmp / "done"), "pid_file": str(tmp / "pid")}
    job_id = submit(sf, "test-steps", params)
    first = _worker_process(settings, "--max-jobs", "1")
    wait_for(lambda: (tmp / "done").exists() and int((tmp / "done").read_text() or 0) >= 5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    child = int((tmp / "pid").read_text())
    wait_for(lambda: not _alive(child), timeout=10)  # the job's process died with its worker
    reached = int((tmp / "done").read_text())
    assert job(sf, job_id).status == "running"  # nobody knows yet
    second = Worker(settings, sf, "w2")
    wait_for(lambda: second.run_once(), timeout=30)  # claims once the heartbeat is stale
    resumed = job(sf, job_id)
    assert (resumed.status, resumed.attempts, resumed.worker_id) == ("succeeded", 2, "w2")
    assert resumed.result == {"resumed_from": reached, "steps": 60} and reached >= 5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(") ")[1][0] != "Z"


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_workers_race_for_50_jobs_and_each_runs_exactly_once(env):
    settings, sf, tmp = env
    ledger = tmp / "ledger"
    ids = [submit(sf, "test-record", {"ledger": str(ledger)}) for _ in range(50)]
    workers = [_worker_process(settings, "--idle-exit") for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=600) == 0
    runs = Counter(int(line.split()[0]) for line in ledger.read_text().splitlines())
    assert runs == Counter(ids)  # every job exactly once
    with sf() as session:
        jobs = [session.get(Job, i) for i in ids]
        assert {j.status for j in jobs} == {"succeeded"} and {j.attempts for j in jobs} == {1}
        assert len({j.worker_id for j in jobs}) == 2  # both took part
