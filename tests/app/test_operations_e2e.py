"""A newcomer's path, over HTTP only once the first admin key exists: ingest the demo data, fine-tune,
follow the job, evaluate, promote, search, roll back; against `crossmodal serve` with its embedded worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from app.config import Settings, settings_env
from tests.helpers.service import free_port, wait_for
from training.synthetic.shapes import generate_dataset


@pytest.fixture
def server(tmp_path):
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        model_spec="test:tiny",
        device="cpu",
        num_workers=0,
        port=port,
        index_refresh_seconds=0.2,
        job_heartbeat_seconds=0.5,
        job_poll_seconds=0.2,
    )
    env = {**os.environ, **settings_env(settings)}
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [*cli, "keys", "create", "--name", "newcomer", "--role", "admin"], env=env, check=True, capture_output=True
    )
    key = created.stdout.decode().strip().splitlines()[-1]
    generate_dataset(settings.data_dir / "demo", n=120, seed=0, image_size=32)
    process = subprocess.Popen([*cli, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base), timeout=120)
    yield base, key, settings
    process.terminate()
    process.wait(timeout=60)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _follow(client: httpx.Client, job_id: int) -> dict:
    """Follow a job's server-sent events to the end; return its last state."""
    last = None
    with client.stream("GET", f"/v1/admin/jobs/{job_id}/events", timeout=600) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "job":
                last = json.loads(line.split(":", 1)[1])
            elif line.startswith("data:") and event == "end":
                break
    assert last is not None
    return last


@pytest.mark.slow  # `crossmodal serve`, three CLI processes and four job children, each loading torch
def test_ingest_finetune_evaluate_promote_search_rollback_over_http(server):
    base, key, settings = server
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    public = httpx.Client(base_url=base, timeout=60)
    assert admin.get("/v1/admin/jobs").status_code == 200
    assert public.get("/v1/admin/jobs").status_code == 401

    manifest = str(settings.data_dir / "demo" / "manifest.csv")
    job = admin.post("/v1/admin/jobs", json={"kind": "ingest", "source": manifest}).json()
    done = _follow(admin, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["added"] == 120
    wait_for(lambda: public.get("/readyz").status_code == 200, timeout=60)
    first = public.post("/v1/search/text", json={"query": "a large red circle", "k": 3}).json()
    base_model = first["model"]["id"]

    config = {
        "lock": {"image_unlocked_groups": None, "text_unlocked_layers": None},
        "data": {"num_workers": 0},
        "optim": {"steps": 40, "batch_size": 16, "warmup_steps": 4, "lr": 2e-3},
        "checkpoint_every": 10,
        "eval_every": 20,
    }
    job = admin.post("/v1/admin/jobs", json={"kind": "finetune", "config": config}).json()
    assert job["status"] == "queued"
    done = _follow(admin, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["details"]["series"]["train"][-1][0] == 40  # every step's curve reached the job; calibration ran last
    assert done["details"]["stage"] == "calibrate relevance"
    assert done["log"] and done["attempts"] == 1
    candidate = done["result"]["model_id"]
    models = admin.get("/v1/admin/models").json()["data"]
    assert {m["id"]: m["status"] for m in models}[candidate] == "candidate"

    job = admin.post(f"/v1/admin/models/{candidate}/evaluate", json={"dataset": "db"}).json()
    done = _follow(admin, job["id"])
    assert done["status"] == "succeeded", done["error"]
    report = admin.get(f"/v1/admin/models/{candidate}").json()["eval_report"]["evaluations"]["db"]
    assert 0 <= report["t2i_R@1"] <= 1 and report["pairs"] > 0

    job = admin.post(f"/v1/admin/models/{candidate}/promote", json={"dataset": "db", "force": True}).json()
    done = _follow(admin, job["id"])
    assert done["status"] == "succeeded", done["error"]
    decision = done["result"]["decision"]
    assert decision["metric"] == "t2i_R@1" and decision["candidate"] == report["t2i_R@1"]
    wait_for(lambda: public.post("/v1/search/text", json={"query": "a blue square"}).json()["model"]["id"] == candidate)

    rolled = admin.post("/v1/admin/rollback", json={})
    assert rolled.status_code == 200 and rolled.json()["active"]["id"] == base_model
    wait_for(
        lambda: public.post("/v1/search/text", json={"query": "a blue square"}).json()["model"]["id"] == base_model
    )
