"""The HTTP API over a small ingested corpus, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image


def _png_bytes(size=(16, 16), colour=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _first_image(service) -> bytes:
    row = service.dataset.rows("test")[0]
    return (service.dataset.root / row["image"]).read_bytes()


def test_ingest_report(service):
    r = service.report
    assert r.read == 40 and r.added == 40 and r.already_present == 0
    assert r.embedded == {"image": 40, "text": 40}
    assert set(r.indexes) == {"image", "text"}


def test_health_and_readiness(service):
    assert service.client.get("/healthz").json() == {"status": "ok"}
    body = service.client.get("/readyz").json()
    assert body["status"] == "ready", body
    assert body["indexes"]["image"]["ntotal"] == 40


@pytest.mark.parametrize("target", ["image", "text"])
def test_text_search_shape(service, target):
    resp = service.client.post("/v1/search/text", json={"query": "a red circle", "target": target, "k": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == 5 and len(body["data"]) == 5
    assert body["model"]["spec"] == "test:tiny" and body["index"]["modality"] == target
    assert body["took_ms"] > 0
    scores = [hit["score"] for hit in body["data"]]
    assert scores == sorted(scores, reverse=True)
    hit = body["data"][0]
    assert set(hit) == {"id", "external_id", "score", "text", "image_url", "metadata", "parts", "relevance"}
    assert hit["image_url"] == f"/v1/items/{hit['id']}/image"
    assert hit["metadata"]["split"] in {"train", "val", "test"}


def test_text_to_text_finds_the_identical_caption(service):
    caption = service.dataset.rows()[3]["text"]
    body = service.client.post("/v1/search/text", json={"query": caption, "target": "text", "k": 1}).json()
    assert body["data"][0]["text"] == caption
    assert body["data"][0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_pagination_and_min_score(service):
    full = service.client.post("/v1/search/text", json={"query": "a star", "k": 10}).json()["data"]
    page = service.client.post("/v1/search/text", json={"query": "a star", "k": 4, "offset": 3}).json()["data"]
    assert [h["id"] for h in page] == [h["id"] for h in full[3:7]]
    cut = full[4]["score"]
    kept = service.client.post("/v1/search/text", json={"query": "a star", "k": 10, "min_score": cut}).json()
    assert all(h["score"] >= cut - 1e-6 for h in kept["data"]) and kept["count"] >= 5
    beyond = service.client.post("/v1/search/text", json={"query": "a star", "k": 10, "offset": 1000}).json()
    assert beyond["count"] == 0


def test_k_larger_than_corpus_returns_everything(service):
    body = service.client.post("/v1/search/text", json={"query": "x", "k": 1000}).json()
    assert body["count"] == 40


def test_image_search_multipart_and_base64_agree(service):
    data = _first_image(service)
    multipart = service.client.post(
        "/v1/search/image", files={"file": ("q.png", data, "image/png")}, data={"target": "image", "k": "3"}
    )
    assert multipart.status_code == 200, multipart.text
    as_json = service.client.post(
        "/v1/search/image",
        json={"image_base64": base64.b64encode(data).decode(), "target": "image", "k": 3},
    )
    assert as_json.status_code == 200, as_json.text
    assert [h["id"] for h in multipart.json()["data"]] == [h["id"] for h in as_json.json()["data"]]
    # image -> image: the query image itself is indexed, so it comes first with score ~1
    assert multipart.json()["data"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    to_text = service.client.post("/v1/search/image", json={"image_base64": data_url, "target": "text", "k": 2})
    assert to_text.status_code == 200 and to_text.json()["index"]["modality"] == "text"


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"query": ""}, 422, None),  # the schema says minLength 1 and a non-blank pattern
        ({"query": "   "}, 422, None),
        ({"query": "x" * 1001}, 422, "query_too_long"),
        ({"query": "x", "k": 0}, 422, None),
        ({"query": "x", "k": 1001}, 422, "k_too_large"),
        ({"query": "x", "target": "audio"}, 422, None),
        ({"query": "x", "offset": -1}, 422, None),
        ({"k": 3}, 422, None),
    ],
)
def test_bad_text_queries_get_clear_4xx(service, body, status, code):
    resp = service.client.post("/v1/search/text", json=body)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body["detail"], str) and body["code"] == (code or "invalid_request")


def _post_file(service, data: bytes, **form):
    return service.client.post(
        "/v1/search/image", files={"file": ("q.bin", data, "application/octet-stream")}, data=form
    )


def test_upload_that_is_not_an_image(service):
    resp = _post_file(service, b"%PDF-1.4 definitely not a picture")
    assert resp.status_code == 415 and resp.json()["code"] == "not_an_image"


def test_corrupt_image(service):
    data = _png_bytes((64, 64))
    resp = _post_file(service, data[: len(data) // 2])
    assert resp.status_code == 400 and resp.json()["code"] == "corrupt_image"


def test_image_over_the_byte_limit(service):
    noise = Image.frombytes("RGB", (400, 400), bytes(range(256)) * (400 * 400 * 3 // 256 + 1))
    buf = io.BytesIO()
    noise.save(buf, format="BMP")  # uncompressed: ~480 KB > the 200 KB limit of this service
    resp = _post_file(service, buf.getvalue())
    assert resp.status_code == 413
    b64 = base64.b64encode(buf.getvalue()).decode()
    resp = service.client.post("/v1/search/image", json={"image_base64": b64})
    assert resp.status_code == 413


def test_decompression_bomb_is_refused_before_decoding(service):
    # 2000x2000 = 4 Mpx of one colour compresses to a few KB but exceeds the 1 Mpx limit
    resp = _post_file(service, _png_bytes((2000, 2000)))
    assert resp.status_code == 413 and resp.json()["code"] == "too_many_pixels"


def test_image_request_errors(service):
    assert (
        service.client.post("/v1/search/image", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    )
    missing = service.client.post("/v1/search/image", data={"target": "image"}, files={"other": ("a", b"b")})
    assert missing.status_code == 422 and missing.json()["code"] == "missing_file"
    bad_b64 = service.client.post("/v1/search/image", json={"image_base64": "***"})
    assert bad_b64.status_code == 422 and "image_base64" in bad_b64.json()["detail"]  # the schema's base64 pattern
    bad_json = service.client.post("/v1/search/image", content=b"{", headers={"content-type": "application/json"})
    assert bad_json.status_code == 422
    bad_k = _post_file(service, _first_image(service), k="0")
    assert bad_k.status_code == 422 and bad_k.json()["code"] == "invalid_request"


def test_items_listing_and_pagination(service):
    first = service.client.get("/v1/items", params={"limit": 5}).json()
    assert first["count"] == 40 and len(first["data"]) == 5
    second = service.client.get("/v1/items", params={"offset": 5, "limit": 5}).json()
    assert {i["id"] for i in first["data"]}.isdisjoint(i["id"] for i in second["data"])
    assert service.client.get("/v1/items", params={"limit": 0}).status_code == 422


def test_item_and_its_image(service):
    item = service.client.get("/v1/items", params={"limit": 1}).json()["data"][0]
    assert service.client.get(f"/v1/items/{item['id']}").json() == item
    resp = service.client.get(item["image_url"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(resp.content)).size == (32, 32)


def test_unknown_item_is_404(service):
    for path in ("/v1/items/999999", "/v1/items/999999/image"):
        resp = service.client.get(path)
        assert resp.status_code == 404 and resp.json()["code"] == "item_not_found"


def test_openapi_documents_both_image_bodies(service):
    spec = service.client.get("/openapi.json").json()
    content = spec["paths"]["/v1/search/image"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)


def test_slow_encoding_does_not_block_the_event_loop(service):
    """/healthz answers while a search is stuck inside the encoder (ordering, not timing)."""
    import threading

    from fastapi.testclient import TestClient

    from app.main import create_app
    from crossmodal_kernel.encoder import Encoder

    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    class BlockedEncoder:
        def __init__(self, inner):
            self.inner = inner

        def encode_texts(self, texts):
            entered.set()
            release.wait(timeout=60)  # on a blocked event loop /healthz could only answer after this
            finished.set()
            return self.inner.encode_texts(texts)

    blocked_app = create_app(service.settings, encoder_factory=lambda spec: BlockedEncoder(Encoder.from_spec(spec)))
    with TestClient(blocked_app) as client:
        search = threading.Thread(target=lambda: client.post("/v1/search/text", json={"query": "a red circle"}))
        search.start()
        assert entered.wait(timeout=60), "the search never reached the encoder"
        assert client.get("/healthz").status_code == 200
        answered_while_blocked = not finished.is_set()
        release.set()
        search.join()
    assert answered_while_blocked, "/healthz waited for the search to leave the encoder"


def test_max_k_is_the_only_cap_and_the_schema_states_it(service):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = service.settings.model_copy(update={"max_k": 1500})
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/search/text", json={"query": "x", "k": 1200}).status_code == 200
        over = client.post("/v1/search/text", json={"query": "x", "k": 1501})
        assert over.status_code == 422 and over.json()["code"] == "k_too_large"
        spec = client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["TextSearchRequest"]["properties"]["k"]["maximum"] == 1500
    multipart = spec["paths"]["/v1/search/image"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert multipart["schema"]["properties"]["k"]["maximum"] == 1500


def test_error_body_in_the_schema_names_what_every_error_carries(service):
    error = service.client.get("/openapi.json").json()["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"detail", "code"}
    body = service.client.post("/v1/search/text", json={"query": ""}).json()
    assert set(error["properties"]) >= set(body)
