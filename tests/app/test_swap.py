"""Promote and roll back while clients search at concurrency 8: no failed request, no mixed pair."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import torch

from app.api.auth import create_key
from app.db import crud
from app.db.models import Index
from app.jobs import queue
from app.jobs.worker import Worker
from app.main import create_app
from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.loading import load_model
from tests.helpers.service import free_port, serving, stack, wait_for

CONCURRENCY = 8


@pytest.fixture
def live(tmp_path):
    """An ingested service (tiny model A) served by uvicorn on loopback, a candidate B, an admin key."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    fast = dict(index_refresh_seconds=0.2, job_heartbeat_seconds=0.2, port=free_port())
    with stack(tmp_path / "data", url, n=60, **fast) as s:
        settings, sf = s.settings, s.session_factory
        other = load_model("test:tiny", "cpu")
        with torch.no_grad():
            for p in other.model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        with sf() as session:
            active = crud.get_active_model(session)
            path = save_checkpoint(other, settings.data_dir / "models" / "b" / "checkpoint.pt")
            candidate = crud.create_model(session, f"test:tiny@{path}", name="B", parent_id=active.id).id
            key = create_key(session, "swap test", "admin")[1]
            session.commit()
        with serving(create_app(settings), settings.port) as base:
            yield settings, sf, active.id, candidate, key, base


@pytest.mark.slow  # the promotion runs in a job child that loads torch, beside a server under load
def test_promote_and_rollback_under_search_load(live):
    settings, sf, model_a, model_b, key, base = live
    stop, responses, errors = threading.Event(), [], []

    def search_forever(i: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                try:
                    resp = client.post("/v1/search/text", json={"query": f"a red circle {i}", "k": 5})
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code}: {resp.text[:200]}")
                    continue
                body = resp.json()
                responses.append((time.monotonic(), body["model"]["id"], body["index"]["id"]))

    clients = [threading.Thread(target=search_forever, args=(i,)) for i in range(CONCURRENCY)]
    for c in clients:
        c.start()
    try:
        wait_for(lambda: len(responses) > 50)
        with sf() as session:
            queue.enqueue(session, "promote", {"kind": "promote", "model_id": model_b, "force": True})
            session.commit()
        assert Worker(settings, sf).run_once()
        wait_for(lambda: any(m == model_b for _, m, _ in responses[-20:]), timeout=60)
        rolled = httpx.post(f"{base}/v1/admin/rollback", json={}, headers={"Authorization": f"Bearer {key}"})
        assert rolled.status_code == 200 and rolled.json()["active"]["id"] == model_a
        flipped_back = time.monotonic()
        wait_for(lambda: responses[-1][0] > flipped_back and responses[-1][1] == model_a, timeout=60)
        # then a run of answers after the flip back (counted, not a guessed time) to check it stays on A
        wait_for(lambda: len(responses) > 200 and sum(t > flipped_back for t, _, _ in responses) >= 40, timeout=60)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=60)
    assert errors == []
    with sf() as session:
        owner = {i.id: i.model_id for i in session.query(Index)}
    assert all(owner[index_id] == model_id for _, model_id, index_id in responses)  # never a mixed pair
    seen = [m for _, m, _ in responses]
    assert model_a in seen and model_b in seen and seen[-1] == model_a
    assert len(responses) > 200
