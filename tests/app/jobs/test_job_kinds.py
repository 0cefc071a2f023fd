"""Each job kind, run by a worker in a child process, on a small ingested service (test:tiny, SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from PIL import Image

from app.config import settings_env
from app.db import crud
from app.db.models import Index, Job, Model
from app.jobs import queue
from app.jobs.worker import Worker
from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.loading import load_model
from tests.helpers.service import stack, wait_for
from tests.helpers.training_runs import checkpoint_weights
from training.synthetic.shapes import generate_dataset

# Every test here runs its jobs in child processes that load torch (and torchrun's ranks): seconds each.
pytestmark = pytest.mark.slow

FAST = dict(job_heartbeat_seconds=0.2, job_stale_seconds=2.0, job_poll_seconds=0.1)
TRAIN = {
    "lock": {"image_unlocked_groups": None, "text_unlocked_layers": None},
    "data": {"num_workers": 0},
    "optim": {"steps": 6, "batch_size": 8, "warmup_steps": 2, "lr": 1e-3},
    "checkpoint_every": 3,
    "eval_every": 3,
}


@pytest.fixture
def env(tmp_path):
    """80 synthetic pairs ingested; the dataset lies in the data dir, where jobs may read."""
    with stack(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", n=80, **FAST) as s:
        yield s.settings, s.session_factory, s.dataset


def run_job(settings, sf, kind: str, params: dict) -> Job:
    with sf() as session:
        job_id = queue.enqueue(session, kind, params).id
        session.commit()
    assert Worker(settings, sf).run_once()
    with sf() as session:
        return session.get(Job, job_id)


def test_ingest_job_adds_a_folder_and_reports(env, tmp_path):
    settings, sf, _ = env
    folder = settings.data_dir / "more"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"new caption {i}")
    job = run_job(settings, sf, "ingest", {"kind": "ingest", "source": str(folder)})
    assert job.status == "succeeded", job.error
    assert job.result["added"] == 3 and set(job.result["indexes"]) == {"image", "text"}
    assert job.details["stage"].endswith("index: add") or job.details["stage"]  # the last stage it reported


def test_ingest_is_cancelled_within_seconds(env, tmp_path):
    settings, sf, _ = env
    settings = settings.model_copy(update={"batch_size": 1})  # one image a forward pass: a slow ingest
    big = generate_dataset(settings.data_dir / "big", n=1000, seed=1, image_size=32)
    with sf() as session:
        job_id = queue.enqueue(session, "ingest", {"kind": "ingest", "source": str(big.manifest)}).id
        session.commit()
    worker = threading.Thread(target=Worker(settings, sf).run_once)
    worker.start()
    # The child process starts (it imports torch: tens of seconds on a loaded 2-core machine) and embeds;
    # how long that takes is not what is measured here, the time from the cancel request to the end is.
    embedding = lambda: (j := _job(sf, job_id)).details is not None and j.details["stage"].startswith("embed")  # noqa: E731
    wait_for(embedding, timeout=120)
    with sf() as session:
        queue.request_cancel(session, job_id)
        session.commit()
    asked = time.monotonic()
    worker.join(timeout=60)
    cancelled = _job(sf, job_id)
    assert cancelled.status == "cancelled" and time.monotonic() - asked < 10
    with sf() as session:  # what was committed stays: the rows, and the next ingest finishes the rest
        assert crud.count_items(session) == 1000  # ids 0-999: the first 80 were there already
        assert crud.get_active_indexes(session, crud.get_active_model(session).id)["image"].ntotal == 80


def _job(sf, job_id):
    with sf() as session:
        return session.get(Job, job_id)


def test_finetune_job_registers_a_candidate_and_evaluate_stores_its_report(env):
    settings, sf, dataset = env
    job = run_job(settings, sf, "finetune", {"kind": "finetune", "config": TRAIN})
    assert job.status == "succeeded", job.error
    assert job.result["steps"] == 6 and job.result["resumed_from_step"] is None and job.result["val"]
    with sf() as session:
        model = session.get(Model, job.result["model_id"])
        active = crud.get_active_model(session)
    assert model.status == "candidate" and model.parent_id == active.id
    assert model.spec == f"test:tiny@{model.checkpoint_path}" and os.path.isfile(model.checkpoint_path)
    assert not (settings.data_dir / "jobs" / str(job.id) / "run" / "checkpoints").exists()  # cleaned up
    assert model.calibration["dataset"] == "db" and model.calibration["pool"] == "pairs"  # calibrated at registration

    evaluation = run_job(settings, sf, "evaluate", {"kind": "evaluate", "model_id": model.id, "dataset": "db"})
    assert evaluation.status == "succeeded", evaluation.error
    with sf() as session:
        stored = session.get(Model, model.id).eval_report["evaluations"]["db"]
    assert stored["pairs"] > 0 and 0 <= stored["t2i_R@1"] <= 1 and "i2t_median_rank" in stored
    synthetic = run_job(
        settings, sf, "evaluate", {"kind": "evaluate", "model_id": model.id, "dataset": str(dataset.root)}
    )
    assert "binding_acc" in synthetic.result["report"] and "probe_top1" in synthetic.result["report"]


def test_a_finetune_whose_worker_is_killed_resumes_to_the_same_weights(env):
    settings, sf, _ = env
    config = {**TRAIN, "optim": {**TRAIN["optim"], "steps": 150}, "checkpoint_every": 20, "eval_every": 50}
    straight = run_job(settings, sf, "finetune", {"kind": "finetune", "config": config})
    assert straight.status == "succeeded", straight.error

    with sf() as session:
        job_id = queue.enqueue(session, "finetune", {"kind": "finetune", "config": config}, max_attempts=3).id
        session.commit()
    environ = {**os.environ, **settings_env(settings)}
    first = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--max-jobs", "1"], env=environ)
    wait_for(lambda: (_job(sf, job_id).details or {}).get("done", 0) >= 45, timeout=120)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = Worker(settings, sf, "second")
    wait_for(lambda: second.run_once(), timeout=60)  # once its heartbeat is stale
    resumed = _job(sf, job_id)
    assert (resumed.status, resumed.attempts, resumed.worker_id) == ("succeeded", 2, "second"), resumed.error
    assert resumed.result["resumed_from_step"] >= 40 and resumed.result["steps"] == 150  # did not start over
    with sf() as session:
        a = checkpoint_weights(session.get(Model, straight.result["model_id"]).checkpoint_path)
        b = checkpoint_weights(session.get(Model, resumed.result["model_id"]).checkpoint_path)
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed by another worker, bit-identical


def _candidate(settings, sf) -> int:
    """A candidate with weights of its own, registered as a fine-tune registers one (fine-tune jobs are the
    tests above; test_operations_e2e promotes one): the active model's weights, perturbed, saved in-process."""
    other = load_model("test:tiny", "cpu")
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_checkpoint(other, settings.data_dir / "models" / "candidate" / "checkpoint.pt")
    with sf() as session:
        candidate = crud.create_model(
            session, f"test:tiny@{path}", name="candidate", parent_id=crud.get_active_model(session).id
        )
        session.commit()
        return candidate.id


def test_promote_builds_beside_the_live_pair_then_flips_and_rolls_back(env):
    settings, sf, _ = env
    candidate = _candidate(settings, sf)
    with sf() as session:
        before = crud.get_active_model(session).id
    promoted = run_job(settings, sf, "promote", {"kind": "promote", "model_id": candidate, "force": True})
    assert promoted.status == "succeeded", promoted.error
    decision = promoted.result["decision"]
    assert decision["metric"] == "t2i_R@1" and decision["forced"] and decision["active_model_id"] == before
    with sf() as session:
        assert crud.get_active_model(session).id == candidate
        indexes = crud.get_active_indexes(session, candidate)
        assert set(indexes) == {"image", "text"} and indexes["image"].ntotal == 80
        assert set(crud.get_active_indexes(session, before)) == {"image", "text"}  # kept for rollback
        stored = session.get(Model, candidate).eval_report
        assert stored["promotion"]["candidate"] == decision["candidate"] and "db" in stored["evaluations"]
        calibration = session.get(Model, candidate).calibration  # refitted on the promotion's set, embedded
        assert calibration["dataset"] == "db" and calibration["pool"] == "collection"
        assert promoted.result["calibration"]["status"] == calibration["status"]
    from app.pipelines.lifecycle import rollback

    previous, now = rollback(sf)
    assert (previous.id, now.id) == (candidate, before)


def test_promotion_is_refused_when_the_candidate_does_not_win(env):
    settings, sf, _ = env
    with sf() as session:  # a "candidate" that is the active model's own weights cannot beat it
        active = crud.get_active_model(session)
        twin = crud.create_model(session, active.spec, name="twin")
        session.commit()
        twin_id = active_id = twin.id, active.id
    job = run_job(settings, sf, "promote", {"kind": "promote", "model_id": twin_id[0]})
    assert job.status == "failed" and "does not beat the active model" in job.error
    metric = job.result["decision"]["metric"]
    value = job.result["decision"]["candidate"]
    assert job.error.startswith(f"refused: {value:.3f} vs {value:.3f} on {metric}") and "Traceback" not in job.error
    assert job.result["refused"] == job.error  # its own result, shown as such by /admin
    assert job.result["decision"]["promote"] is False and job.result["decision"]["beats"] is False
    with sf() as session:
        assert crud.get_active_model(session).id == active_id[1]
        assert session.get(Model, twin_id[0]).eval_report["promotion"]["beats"] is False
        assert session.query(Index).filter(Index.model_id == twin_id[0]).count() == 0  # nothing was built


def test_finetune_job_under_torchrun_with_two_ranks(env):
    settings, sf, _ = env
    job = run_job(settings, sf, "finetune", {"kind": "finetune", "config": TRAIN, "nproc_per_node": 2})
    assert job.status == "succeeded", job.error
    assert job.result["steps"] == 6 and job.result["model_id"]
    # Rank 0's training curve reached the job (calibrating the new model's relevance is the last stage).
    assert [row[0] for row in job.details["series"]["train"]] == list(range(1, 7))
