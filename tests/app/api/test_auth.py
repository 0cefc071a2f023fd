"""API keys: hashed, role-checked, revoked at once on every process, never echoed."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient

from app.api.auth import create_key, revoke_key, verify
from app.db.models import ApiKey
from app.main import create_app


@pytest.fixture(scope="module")
def keys(service):
    with service.session_factory() as session:
        admin = create_key(session, "ops", "admin")[1]
        search = create_key(session, "frontend", "search")[1]
        session.commit()
    return {"admin": admin, "search": search}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_only_a_hash_is_stored_and_the_key_verifies(service, keys):
    with service.session_factory() as session:
        rows = session.query(ApiKey).all()
        assert all(keys["admin"] not in (r.secret_hash, r.prefix, r.name) for r in rows)
        assert verify(session, keys["admin"]).role == "admin"
        assert verify(session, keys["admin"] + "x") is None and verify(session, "cmk_nope_nope") is None
    with pytest.raises(ValueError, match="role"):
        with service.session_factory() as session:
            create_key(session, "x", "root")


def _admin_routes(client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "1", path))
        for path, ops in spec["paths"].items()
        if path.startswith("/v1/admin")
        for method in ops
    ]


def test_every_admin_route_needs_an_admin_key(service, keys):
    routes = _admin_routes(service.client)
    assert len(routes) >= 13
    for method, path in routes:
        anonymous = service.client.request(method, path, json={})
        assert anonymous.status_code == 401, (method, path)
        assert anonymous.json()["code"] == "missing_api_key" and anonymous.headers["www-authenticate"] == "Bearer"
        searcher = service.client.request(method, path, json={}, headers=bearer(keys["search"]))
        assert searcher.status_code == 403 and searcher.json()["code"] == "forbidden", (method, path)
        wrong = service.client.request(method, path, json={}, headers={"X-API-Key": "cmk_0000_nope"})
        assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_api_key"


def test_admin_key_is_accepted(service, keys):
    resp = service.client.get("/v1/admin/jobs", headers=bearer(keys["admin"]))
    assert resp.status_code == 200 and resp.json()["count"] >= 0
    assert service.client.get("/v1/admin/models", headers={"X-API-Key": keys["admin"]}).status_code == 200


def test_search_is_open_by_default_and_keyed_when_configured(service, keys):
    assert service.client.post("/v1/search/text", json={"query": "a red circle"}).status_code == 200
    settings = service.settings.model_copy(update={"search_auth": "key"})
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/search/text", json={"query": "a red circle"}).status_code == 401
        assert client.get("/v1/items").status_code == 401
        for role in ("search", "admin"):
            resp = client.post("/v1/search/text", json={"query": "a red circle"}, headers=bearer(keys[role]))
            assert resp.status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_a_revoked_key_is_refused_at_once_by_every_process(service):
    with service.session_factory() as session:
        row, key = create_key(session, "temp", "admin")
        session.commit()
    other = create_app(service.settings)  # another API process: its own engine and pool
    with TestClient(other) as second:
        for client in (service.client, second):
            assert client.get("/v1/admin/jobs", headers=bearer(key)).status_code == 200
        with service.session_factory() as session:
            revoke_key(session, str(row.id))
            session.commit()
        for client in (service.client, second):
            resp = client.get("/v1/admin/jobs", headers=bearer(key))
            assert resp.status_code == 401 and resp.json()["code"] == "invalid_api_key"


def test_keys_never_reach_logs_or_error_bodies(service, keys, caplog):
    secret = keys["admin"][:-3] + "xyz"  # a wrong key that looks right
    with caplog.at_level(logging.DEBUG):
        resp = service.client.get("/v1/admin/jobs", headers=bearer(secret))
        ok = service.client.post("/v1/admin/jobs", json={"kind": "nope"}, headers=bearer(keys["admin"]))
    assert resp.status_code == 401 and ok.status_code == 422
    for text in (resp.text, ok.text, caplog.text):
        assert secret not in text and keys["admin"] not in text
