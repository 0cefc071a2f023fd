"""/metrics: request counts by route template, latency, search stages and what is loaded."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.metrics import Metrics
from app.main import create_app
from tests.helpers.service import stack


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_and_status(service):
    before = scrape(service.client)
    item_id = service.client.get("/v1/items?limit=1").json()["data"][0]["id"]
    assert service.client.get(f"/v1/items/{item_id}").status_code == 200
    assert service.client.get("/v1/items/999999").status_code == 404
    assert service.client.get("/no/such/path").status_code == 404
    after = scrape(service.client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    template = "/v1/items/{item_id}"
    assert not any(re.search(rf"/v1/items/{item_id}\b", str(k)) for k in after)  # never the raw path
    assert delta("crossmodal_http_requests_total", method="GET", route=template, status="200") == 1
    assert delta("crossmodal_http_requests_total", method="GET", route=template, status="404") == 1
    assert delta("crossmodal_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("crossmodal_http_request_duration_seconds_count", method="GET", route=template) == 2


def test_search_stages_and_loaded_state(service):
    before = scrape(service.client)
    response = service.client.post("/v1/search/text", json={"query": "a red circle", "target": "image", "k": 3})
    assert response.status_code == 200
    bad = service.client.post("/v1/search/text", json={"query": "   ", "k": 3})
    assert bad.status_code == 422
    after = scrape(service.client)
    for stage in ("encode", "search", "hydrate"):
        labels = {"query": "text", "target": "image", "stage": stage}
        count = "crossmodal_search_stage_seconds_count"
        assert value(after, count, **labels) - value(before, count, **labels) == 1  # the 422 is not a search
    assert value(after, "crossmodal_model_loaded") == 1
    assert value(after, "crossmodal_index_vectors", modality="image") == service.report.embedded["image"] == 40
    assert value(after, "crossmodal_http_requests_in_flight") == 1  # the scrape itself


def test_metrics_can_be_switched_off(tmp_path):
    with stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", n=0, metrics_enabled=False) as s:
        with TestClient(create_app(s.settings)) as client:
            assert client.get("/metrics").status_code == 404


def test_apps_do_not_share_a_registry():
    a, b = Metrics(), Metrics()
    a.requests.labels("GET", "/x", "200").inc()
    assert b"/x" not in b.render()[0]
    assert b"crossmodal_model_loaded 0.0" in a.render()[0]  # no search state yet


def test_route_template_keeps_router_prefixes():
    from app.api.metrics import route_template

    class Route:
        path_format = "/items/{item_id}/image"

    scope = {"route": Route(), "path": "/v1/items/17/image", "path_params": {"item_id": "17"}}
    assert route_template(scope) == "/v1/items/{item_id}/image"
    assert route_template({"path": "/nowhere"}) == "unmatched"
