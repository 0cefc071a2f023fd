"""`POST /v1/search/composite` over HTTP: what it refuses (and with which status and code), its schema,
and that the single-query and clip-retrieval endpoints are untouched by it, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from app.db import crud
from app.db.models import Item

URL = "/v1/search/composite"


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 200, 0)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def ids(service):
    """A live item, a deleted one and one that is not embedded (added after indexing), by id."""
    sf = service.session_factory
    with sf() as session:
        live, gone = session.query(Item.id).order_by(Item.id).limit(2).all()
        crud.soft_delete_items(session, ids=[gone[0]])
        late = Item(external_id="late-composite", text="added after the index was built")
        session.add(late)
        session.commit()
        return {"live": live[0], "gone": gone[0], "late": late.id}


def _post(service, body, **kwargs):
    return service.client.post(URL, json=body, **kwargs)


def test_a_composite_query_answers(service, ids):
    body = {
        "parts": [
            {"text": "a red circle", "weight": 1.0},
            {"text": "blue", "weight": -0.5},
            {"item": ids["live"], "weight": 0.7},
            {"image_base64": "data:image/png;base64," + _png(), "weight": 0.2},
        ],
        "k": 5,
    }
    response = _post(service, body)
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["count"] == 5 and got["mode"] == "vector" and got["index"]["modality"] == "image"
    assert response.headers["X-Crossmodal-Model"] == str(got["model"]["id"])
    assert ids["gone"] not in {h["id"] for h in got["data"]}


REFUSED = [
    ({"parts": []}, 422, "invalid_request"),
    ({}, 422, "invalid_request"),
    ({"parts": [{"weight": 1}]}, 422, "invalid_request"),
    ({"parts": [{"text": "a", "item": 1}]}, 422, "invalid_request"),
    ({"parts": [{"text": "   "}]}, 422, "invalid_request"),
    ({"parts": [{"text": "x" * 1001}]}, 422, "query_too_long"),
    ({"parts": [{"text": "a", "weight": True}]}, 422, "invalid_request"),
    ({"parts": [{"text": "a", "weight": "1"}]}, 422, "invalid_request"),
    ({"parts": [{"text": "a", "weight": 101}]}, 422, "invalid_request"),
    ({"parts": [{"text": "a"}], "mode": "lexical"}, 422, "invalid_request"),
    ({"parts": [{"text": "a"}], "k": 100_000}, 422, "k_too_large"),
    ({"parts": [{"text": "a"}], "extra": 1}, 422, "invalid_request"),
    ({"parts": [{"item": 0}]}, 422, "invalid_request"),
    ({"parts": [{"item": 2**60}]}, 422, "invalid_request"),
    ({"parts": [{"item": 1, "modality": "audio"}]}, 422, "invalid_request"),
    ({"parts": [{"text": "a"}] * 17}, 422, "too_many_parts"),
    ({"parts": [{"text": "a red circle"}, {"text": "a red circle", "weight": -1}]}, 400, "zero_query"),
    ({"parts": [{"text": "a red circle", "weight": 0}]}, 400, "zero_query"),
    ({"parts": [{"image_base64": "not base64!"}]}, 422, "invalid_request"),
    ({"parts": [{"image_base64": base64.b64encode(b"hello, not an image").decode()}]}, 415, "not_an_image"),
    ({"parts": [{"item": 2**40}]}, 404, "item_not_found"),
]


@pytest.mark.parametrize(("body", "status", "code"), REFUSED, ids=[f"{c}-{i}" for i, (_, _, c) in enumerate(REFUSED)])
def test_refused(service, ids, body, status, code):
    response = _post(service, body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["detail"]


def test_items_that_cannot_be_a_part(service, ids):
    for which, status, code in (("gone", 404, "item_not_found"), ("late", 409, "item_not_indexed")):
        response = _post(service, {"parts": [{"text": "a red circle"}, {"item": ids[which], "weight": 0.5}]})
        assert response.status_code == status and response.json()["code"] == code, response.text
        assert f"parts[1] (item {ids[which]})" in response.json()["detail"]
    one_index = _post(service, {"parts": [{"item": ids["late"], "modality": "text"}]})
    assert one_index.status_code == 409 and "text index" in one_index.json()["detail"]


def test_the_body_must_be_a_json_object_within_the_limit(service):
    client = service.client
    cases = [
        (client.post(URL, content=b"[1, 2]", headers={"content-type": "application/json"}), 422, "invalid_json"),
        (client.post(URL, content=b"{oops", headers={"content-type": "application/json"}), 422, "invalid_json"),
        (
            client.post(
                URL, content=b'{"parts": [{"text": "a", "weight": NaN}]}', headers={"content-type": "application/json"}
            ),
            422,
            "invalid_request",
        ),  # fmt: skip
        (client.post(URL, data={"parts": "a"}), 415, "unsupported_media_type"),
    ]
    for response, status, code in cases:
        assert response.status_code == status and response.json()["code"] == code, response.text
    huge = "A" * (service.settings.max_upload_bytes * 2)
    too_big = _post(service, {"parts": [{"image_base64": huge}]})
    assert too_big.status_code == 413 and too_big.json()["code"] == "body_too_large"


def test_the_part_cap_is_a_setting_and_in_the_schema(service):
    schema = service.client.get("/openapi.json").json()
    operation = schema["paths"][URL]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["parts"]["maxItems"] == service.settings.max_query_parts == 16
    components = schema["components"]["schemas"]
    assert components["TextPart"]["properties"]["text"]["maxLength"] == service.settings.max_query_chars
    assert {"TextPart", "ImagePart", "ItemPart"} <= set(components)
    assert {"400", "404", "409", "413", "415", "422"} <= set(operation["responses"])
    # the response's own `text` and `parts` fields are not limited by the request's caps
    result = components["SearchResult"]["properties"]
    assert "maxLength" not in result["text"] and "maxItems" not in result["parts"]
    service.settings.max_query_parts = 2
    try:
        response = _post(service, {"parts": [{"text": "a"}, {"text": "b"}, {"text": "c"}]})
        assert response.status_code == 422 and response.json()["code"] == "too_many_parts"
        assert "CROSSMODAL_MAX_QUERY_PARTS" in response.json()["detail"]
    finally:
        service.settings.max_query_parts = 16


def test_metrics_count_composite_searches(service, ids):
    assert _post(service, {"parts": [{"text": "a red circle"}, {"item": ids["live"]}]}).status_code == 200
    metrics = service.client.get("/metrics").text
    assert 'crossmodal_search_stage_seconds_count{query="composite",stage="encode",target="image"}' in metrics
