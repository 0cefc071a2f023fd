"""The table of bad inputs: each one a 4xx with the one error shape, `{detail, code}`, never a 500.

The rows are what a newcomer tried against a fresh service (numbers JSON cannot carry, ids past
64 bits, two files, a body nested thousands deep, a wrong method) and every upload case the
docs/api.md names. schemathesis (api/test_contract.py) generates many more; these are the ones we name.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

JSON = {"content-type": "application/json"}


def png(size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, format="PNG")
    return buf.getvalue()


def raw(body: str) -> dict:
    return {"content": body.encode(), "headers": JSON}


NESTED = "[" * 100_000 + "]" * 100_000
BAD_INPUTS = [
    # (what, method, path, request kwargs, status, code or None for any)
    ("k is NaN", "POST", "/v1/search/text", raw('{"query": "x", "k": NaN}'), 422, "invalid_request"),
    ("k is Infinity", "POST", "/v1/search/text", raw('{"query": "x", "k": Infinity}'), 422, "invalid_request"),
    ("k is 1e400", "POST", "/v1/search/text", raw('{"query": "x", "k": 1e400}'), 422, "invalid_request"),
    ("offset is NaN", "POST", "/v1/search/text", raw('{"query": "x", "offset": NaN}'), 422, "invalid_request"),
    ("offset is 1e400", "POST", "/v1/search/text", raw('{"query": "x", "offset": 1e400}'), 422, "invalid_request"),
    ("offset past 2^63", "POST", "/v1/search/text", raw('{"query": "x", "offset": 9223372036854775808}'), 422, None),
    ("min_score is NaN", "POST", "/v1/search/text", raw('{"query": "x", "min_score": NaN}'), 422, "invalid_request"),
    ("min_score is -Infinity", "POST", "/v1/search/text", raw('{"query": "x", "min_score": -Infinity}'), 422, None),
    ("min_score is 1e400", "POST", "/v1/search/text", raw('{"query": "x", "min_score": 1e400}'), 422, None),
    ("min_relevance is NaN", "POST", "/v1/search/text", raw('{"query": "x", "min_relevance": NaN}'), 422, "invalid_request"),
    ("min_relevance below 0", "POST", "/v1/search/text", {"json": {"query": "x", "min_relevance": -0.1}}, 422, "invalid_request"),
    ("min_relevance above 1", "POST", "/v1/search/text", {"json": {"query": "x", "min_relevance": 1.5}}, 422, "invalid_request"),
    ("min_relevance is a string", "POST", "/v1/search/text", {"json": {"query": "x", "min_relevance": "0.5"}}, 422, "invalid_request"),
    ("k is true", "POST", "/v1/search/text", {"json": {"query": "x", "k": True}}, 422, "invalid_request"),
    ("k is a string", "POST", "/v1/search/text", {"json": {"query": "x", "k": "5"}}, 422, "invalid_request"),
    ("k is 2.5", "POST", "/v1/search/text", {"json": {"query": "x", "k": 2.5}}, 422, "invalid_request"),
    ("k is 0", "POST", "/v1/search/text", {"json": {"query": "x", "k": 0}}, 422, "invalid_request"),
    ("k over CROSSMODAL_MAX_K", "POST", "/v1/search/text", {"json": {"query": "x", "k": 1001}}, 422, "k_too_large"),
    ("empty query", "POST", "/v1/search/text", {"json": {"query": ""}}, 422, "invalid_request"),
    ("blank query", "POST", "/v1/search/text", {"json": {"query": " \t "}}, 422, "invalid_request"),
    ("query too long", "POST", "/v1/search/text", {"json": {"query": "x" * 1001}}, 422, "query_too_long"),
    ("no query", "POST", "/v1/search/text", {"json": {"k": 3}}, 422, "invalid_request"),
    ("unknown option", "POST", "/v1/search/text", {"json": {"query": "x", "min_scor": 0.5}}, 422, None),
    ("unknown target", "POST", "/v1/search/text", {"json": {"query": "x", "target": "audio"}}, 422, None),
    ("body is an array", "POST", "/v1/search/text", {"json": ["x"]}, 422, None),
    ("body is not JSON", "POST", "/v1/search/text", raw("{"), 422, None),
    ("body nested 100k deep", "POST", "/v1/search/text", raw(NESTED), 400, None),
    ("image body nested deep", "POST", "/v1/search/image", raw(NESTED), 400, "body_too_deep"),
    ("wrong method", "PUT", "/v1/search/text", {"json": {"query": "x"}}, 405, "method_not_allowed"),
    ("wrong method, clip-retrieval route", "GET", "/knn-service", {}, 405, "method_not_allowed"),
    ("unknown route", "GET", "/v1/nope", {}, 404, "not_found"),
    ("item id past 2^63", "GET", "/v1/items/9223372036854775808", {}, 422, "invalid_request"),
    ("item id past 2^64", "GET", "/v1/items/99999999999999999999999", {}, 422, "invalid_request"),
    ("negative item id", "GET", "/v1/items/-1", {}, 422, "invalid_request"),
    ("item offset past 2^63", "GET", "/v1/items?offset=9223372036854775808", {}, 422, "invalid_request"),
    ("item limit 0", "GET", "/v1/items?limit=0", {}, 422, "invalid_request"),
    ("unknown item", "GET", "/v1/items/999999", {}, 404, "item_not_found"),
    ("unknown item image", "GET", "/v1/items/999999/image", {}, 404, "item_not_found"),
    # uploads, as docs/api.md lists them
    ("upload: not an image", "POST", "/v1/search/image", {"files": {"file": ("a.pdf", b"%PDF-1.4 nope")}}, 415, "not_an_image"),
    ("upload: corrupt image", "POST", "/v1/search/image", {"files": {"file": ("a.png", png((64, 64))[:80])}}, 400, "corrupt_image"),
    ("upload: empty file", "POST", "/v1/search/image", {"files": {"file": ("a.png", b"")}}, 422, "empty_image"),
    ("upload: over the byte limit", "POST", "/v1/search/image", {"files": {"file": ("a.bmp", b"BM" + bytes(300_000))}}, 413, None),
    ("upload: decompression bomb", "POST", "/v1/search/image", {"files": {"file": ("a.png", png((2000, 2000)))}}, 413, "too_many_pixels"),
    ("upload: two files", "POST", "/v1/search/image", {"files": [("file", ("a.png", png())), ("file", ("b.png", png()))]}, 400, None),
    ("upload: no file field", "POST", "/v1/search/image", {"files": {"other": ("a.png", png())}}, 422, "missing_file"),
    ("upload: k is not a number", "POST", "/v1/search/image", {"files": {"file": ("a.png", png())}, "data": {"k": "many"}}, 422, "invalid_request"),
    ("upload: k is NaN", "POST", "/v1/search/image", {"files": {"file": ("a.png", png())}, "data": {"k": "NaN"}}, 422, "invalid_request"),
    ("upload: unknown field", "POST", "/v1/search/image", {"files": {"file": ("a.png", png())}, "data": {"kk": "3"}}, 422, "invalid_request"),
    ("upload: wrong content type", "POST", "/v1/search/image", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
    ("base64: not base64", "POST", "/v1/search/image", {"json": {"image_base64": "***"}}, 422, "invalid_request"),
    ("base64: not an image", "POST", "/v1/search/image", {"json": {"image_base64": base64.b64encode(b"hello!").decode()}}, 415, "not_an_image"),
    ("base64: over the byte limit", "POST", "/v1/search/image", {"json": {"image_base64": base64.b64encode(bytes(300_000)).decode()}}, 413, None),
    ("base64: body over the limit", "POST", "/v1/search/image", {"json": {"image_base64": "A" * 400_000}}, 413, "body_too_large"),
    ("base64: k is 1e400", "POST", "/v1/search/image", raw('{"image_base64": "AAAA", "k": 1e400}'), 422, "invalid_request"),
]  # fmt: skip


@pytest.mark.parametrize("what, method, path, kwargs, status, code", BAD_INPUTS, ids=[r[0] for r in BAD_INPUTS])
def test_bad_input_is_a_4xx_in_the_one_error_shape(service, what, method, path, kwargs, status, code):
    resp = service.client.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text[:300]
    body = resp.json()
    assert set(body) <= {"detail", "code", "errors"} and isinstance(body["detail"], str) and body["code"]
    if code is not None:
        assert body["code"] == code
    if status == 405:
        assert "POST" in resp.headers["allow"]
