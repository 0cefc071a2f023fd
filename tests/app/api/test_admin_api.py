"""The admin API without a worker: validation before queueing, job control, models, indexes, items, keys."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from app.api.auth import create_key
from app.jobs import queue
from app.main import create_app
from tests.helpers.service import free_port, serving


@pytest.fixture(scope="module")
def admin(service):
    with service.session_factory() as session:
        key = create_key(session, "admin tests", "admin")[1]
        session.commit()
    client = service.client

    def call(method: str, path: str, **kw):
        return client.request(method, f"/v1/admin{path}", headers={"Authorization": f"Bearer {key}"}, **kw)

    call.key = key
    return call


@pytest.mark.parametrize(
    "body, status, code, mentions",
    [
        ({"kind": "finetune", "config": {"optim": {"stepz": 3}}}, 422, "invalid_config", "optim.stepz"),
        ({"kind": "finetune", "config": {"optim": {"steps": 0}}}, 422, "invalid_config", "optim.steps"),
        ({"kind": "finetune", "config": {"output_dir": "/tmp/x"}}, 422, "invalid_request", "output_dir"),
        ({"kind": "finetune", "config": {"data": {"manifest": "/etc/passwd"}}}, 403, "path_not_allowed", "/etc"),
        ({"kind": "finetune", "unknown": 1}, 422, "invalid_request", "unknown"),
        ({"kind": "ingest", "source": "/etc"}, 403, "path_not_allowed", "allowed roots"),
        ({"kind": "ingest", "source": "no-such-folder"}, 403, "path_not_allowed", "no-such-folder"),
        ({"kind": "ingest"}, 422, "invalid_request", "exactly one"),
        ({"kind": "evaluate", "model_id": 99999}, 404, "model_not_found", "99999"),
        ({"kind": "promote", "model_id": 1, "dataset": "/etc"}, 403, "path_not_allowed", "/etc"),
        ({"kind": "launch-missiles"}, 422, "invalid_request", "kind"),
    ],
)
def test_bad_jobs_are_refused_before_they_are_queued(admin, body, status, code, mentions):
    before = admin("GET", "/jobs").json()["count"]
    resp = admin("POST", "/jobs", json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code and mentions in resp.json()["detail"]
    assert admin("GET", "/jobs").json()["count"] == before


def test_a_missing_source_under_an_allowed_root_is_a_422(admin, service):
    resp = admin("POST", "/jobs", json={"kind": "ingest", "source": str(service.settings.data_dir / "nope")})
    assert resp.status_code == 422 and resp.json()["code"] == "not_found"


def test_queue_get_list_cancel_and_retry(admin, service):
    source = str(service.dataset.manifest)
    job = admin("POST", "/jobs", json={"kind": "ingest", "source": source})
    assert job.status_code == 202
    body = job.json()
    assert (body["status"], body["kind"], body["params"]["source"], body["created_by"]) == (
        "queued",
        "ingest",
        source,
        "admin tests",
    )
    assert admin("GET", f"/jobs/{body['id']}").json()["id"] == body["id"]
    with service.session_factory() as session:  # a fine-tune's curves: on the job, not in the list
        lease = queue.lease_of(queue.claim(session, "fake-worker", kinds=["ingest"]))
        series = {"train": [[1, 2.5, 1e-4]], "val": []}
        queue.report_progress(session, lease, 0.1, "step 1", {"stage": "train", "series": series})
        session.commit()
    assert admin("GET", f"/jobs/{body['id']}").json()["details"]["series"] == series
    listed = admin("GET", "/jobs").json()["data"]
    assert next(j for j in listed if j["id"] == body["id"])["details"] == {"stage": "train"}
    with service.session_factory() as session:
        queue.release(session, lease, "back to the queue")
        session.commit()
    listed = admin("GET", "/jobs", params={"kind": "ingest", "status": "queued"}).json()
    assert body["id"] in [j["id"] for j in listed["data"]]
    assert admin("POST", f"/jobs/{body['id']}/retry").status_code == 409  # queued: nothing to retry
    cancelled = admin("POST", f"/jobs/{body['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested_at"]
    again = admin("POST", f"/jobs/{body['id']}/retry").json()
    assert (again["status"], again["attempts"]) == ("queued", 0)
    admin("POST", f"/jobs/{body['id']}/cancel")
    assert admin("GET", "/jobs/999999").status_code == 404


def test_events_stream_the_job_until_it_finishes(admin, service):
    """Read live from a server (TestClient hands a stream over only once it ended): the fake worker moves
    the job on only after the stream has shown the state before, so no state is missed whatever the timing."""
    job_id = admin("POST", "/jobs", json={"kind": "embed"}).json()["id"]
    headers = {"Authorization": f"Bearer {admin.key}"}
    with (
        serving(create_app(service.settings), free_port()) as base,
        httpx.Client(base_url=base, headers=headers, timeout=60) as client,
        client.stream("GET", f"/v1/admin/jobs/{job_id}/events") as stream,
    ):
        events = iter_events(stream.iter_lines())
        seen = [next(events)]  # the job as queued
        with service.session_factory() as session:
            lease = queue.lease_of(queue.claim(session, "fake-worker", kinds=["embed"]))
            session.commit()
            queue.report_progress(session, lease, 0.5, "halfway", {"stage": "embed", "done": 1, "total": 2})
            session.commit()
            deadline = time.monotonic() + 60  # the server pings every 15 s: a missing state cannot hang this
            while not (seen[-1][0] == "job" and json.loads(seen[-1][1])["message"] == "halfway"):
                assert time.monotonic() < deadline, seen
                seen.append(next(events))
            queue.finish(session, lease, "succeeded", result={"ok": True})
            session.commit()
        events = seen + list(events)  # until the server closes the stream
    kinds = [name for name, _ in events]
    assert kinds[-1] == "end" and json.loads(events[-1][1]) == {"status": "succeeded"}
    states = [json.loads(data) for name, data in events if name == "job"]
    assert states[0]["status"] == "queued" and states[-1]["status"] == "succeeded"
    assert any(s["message"] == "halfway" for s in states)
    assert admin("GET", "/jobs/999999/events").status_code == 404


def iter_events(lines):
    """SSE lines as (event, data) pairs."""
    name = None
    for line in lines:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and name:
            yield name, line.split(":", 1)[1].strip()


def test_models_indexes_and_rollback_without_a_target(admin, service):
    models = admin("GET", "/models").json()
    assert models["count"] >= 1 and models["data"][0]["status"] in {"active", "candidate", "retired"}
    active = next(m for m in models["data"] if m["status"] == "active")
    assert (models["active_id"], models["rollback_target_id"]) == (active["id"], None)  # nothing to roll back to
    assert admin("GET", f"/models/{active['id']}").json()["spec"] == active["spec"]
    assert admin("GET", "/models/99999").status_code == 404
    indexes = admin("GET", "/indexes", params={"model_id": active["id"], "status": "active"}).json()
    assert {i["modality"] for i in indexes["data"]} == {"image", "text"}
    assert all(i["kind"] == "flat" and i["stats"]["recall_at_10"] == 1.0 for i in indexes["data"])
    resp = admin("POST", "/rollback", json={})
    assert resp.status_code == 409 and resp.json()["code"] == "no_rollback_target"


def test_evaluate_and_promote_endpoints_queue_jobs(admin, service):
    model_id = admin("GET", "/models").json()["data"][0]["id"]
    job = admin("POST", f"/models/{model_id}/evaluate", json={"dataset": "db"})
    expected = {"kind": "evaluate", "model_id": model_id, "dataset": "db", "split": "test"}
    assert job.status_code == 202 and job.json()["params"] == expected
    assert admin("POST", f"/models/{model_id}/promote", json={"force": True, "bogus": 1}).status_code == 422
    admin("POST", f"/jobs/{job.json()['id']}/cancel")


def test_deleting_items_takes_them_out_of_search_at_once(admin, service):
    hits = service.client.post("/v1/search/text", json={"query": "a star", "k": 3}).json()["data"]
    victim = hits[0]["id"]
    assert admin("DELETE", f"/items/{victim}").json() == {"deleted": [victim]}
    assert admin("DELETE", f"/items/{victim}").status_code == 404
    after = service.client.post("/v1/search/text", json={"query": "a star", "k": 40}).json()["data"]
    assert victim not in {h["id"] for h in after}
    assert admin("POST", "/items/delete", json={"ids": [10**12], "external_ids": ["nope"]}).json() == {"deleted": []}


def test_keys_over_http(admin):
    created = admin("POST", "/keys", json={"name": "batch job", "role": "search"})
    assert created.status_code == 201 and created.json()["key"].startswith("cmk_")
    listed = admin("GET", "/keys").json()
    assert all("key" not in k for k in listed["data"]) and "batch job" in {k["name"] for k in listed["data"]}
    revoked = admin("DELETE", f"/keys/{created.json()['id']}").json()
    assert revoked["revoked_at"] is not None
    assert admin("DELETE", "/keys/99999").status_code == 404
