"""clip-retrieval compatibility, tested with clip-retrieval's own code: its ``ClipClient`` and its built front
end (in headless Chromium, from another origin) against a live server, plus the contract's edges.

``clip_retrieval/__init__.py`` imports torch, wandb and Flask: the client module is loaded from its file
without it, and the front end is served from the installed wheel's ``front/build``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from app.api.auth import create_key
from app.api.routes import clip_compat as clip_routes
from app.db.models import Item
from app.main import create_app
from app.pipelines.ingest import ingest
from app.serving.query import SearchRefused
from tests.helpers.browser import screenshot
from tests.helpers.service import free_port, make_settings, serving, stack
from training.synthetic.shapes import SyntheticDataset

INDEX = "crossmodal"
LIMITS = dict(max_upload_bytes=200_000, max_image_pixels=1_000_000)  # every app here has these


def _package_dir() -> Path | None:
    """The installed clip_retrieval package's folder, found without importing (running) the package."""
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing (the Makefile installs clip-retrieval)")
    pytest.skip(f"{what} is missing: pip install --no-deps clip-retrieval")


@pytest.fixture(scope="module")
def clip_client():
    """``clip_retrieval/clip_client.py`` as a module of its own (it needs only ``requests``)."""
    package = _package_dir()
    if package is None or not (package / "clip_client.py").is_file():
        _missing("clip_retrieval/clip_client.py")
    spec = importlib.util.spec_from_file_location("clip_retrieval_client", package / "clip_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "clip_retrieval" not in sys.modules  # the package (torch, Flask, ...) was never imported
    return module


@dataclass
class Data:
    tmp: Path
    url: str
    dataset: SyntheticDataset
    ids: dict[str, int]  # external id -> item id

    def settings(self, **overrides):
        return make_settings(self.tmp, self.url, **LIMITS, **overrides)

    def image(self, row: int) -> Path:
        return self.dataset.root / self.dataset.rows()[row]["image"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    """40 synthetic pairs, two exact copies of the first, an item with no caption, one with no image."""
    tmp = tmp_path_factory.mktemp("clip")
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    with stack(tmp, url, n=40, **LIMITS) as s:
        rows = s.dataset.rows()
        extra = [
            {"id": "copy-1", "image": rows[0]["image"], "text": rows[0]["text"], "note": None},
            {"id": "copy-2", "image": rows[0]["image"], "text": rows[0]["text"], "note": None},
            {"id": "image-only", "image": rows[1]["image"], "note": None},
            {"id": "text-only", "text": "a caption that has no image", "note": None},
        ]
        (s.dataset.root / "extra.jsonl").write_text("\n".join(json.dumps(r) for r in extra))
        ingest(s.dataset.root / "extra.jsonl", s.settings, s.session_factory)
        with s.session_factory() as session:
            ids = {e: i for i, e in session.execute(select(Item.id, Item.external_id))}
    return Data(tmp, url, s.dataset, ids)


@dataclass
class Live:
    base: str  # our server
    static: str  # clip-retrieval's front end and some query images, on another origin
    app: object


@pytest.fixture(scope="module")
def live(data, clip_client):
    front = Path(clip_client.__file__).parent.parent / "front" / "build"
    if not (front / "index.html").is_file():
        _missing(str(front))
    app = create_app(data.settings(cors_allow_origins="*", clip_image_url_fetch=True, fetch_allow_private=True))
    static = Starlette(
        routes=[
            Mount("/query-images", StaticFiles(directory=data.dataset.root / "images")),
            Mount("/", StaticFiles(directory=front, html=True)),
        ]
    )
    with serving(app, free_port()) as base, serving(static, free_port()) as static_base:
        yield Live(base, static_base, app)


@pytest.fixture(scope="module")
def plain(data):
    """Every new setting at its default: no CORS, no URL fetching."""
    with TestClient(create_app(data.settings())) as client:
        yield client


@pytest.fixture(scope="module")
def strict(data):
    """URL fetching on (public addresses only), max_k 5, search behind a key."""
    app = create_app(data.settings(clip_image_url_fetch=True, max_k=5, search_auth="key"))
    with TestClient(app) as client:
        with app.state.session_factory() as session:
            key = create_key(session, "clip-retrieval", "search")[1]
            session.commit()
        client.headers["X-API-Key"] = key
        yield client


def _knn(client, headers: dict | None = None, **body):
    headers = {"content-type": "text/plain;charset=UTF-8", **(headers or {})}  # what the front end sends
    return client.post("/knn-service", content=json.dumps(body), headers=headers)


def _no_nulls(results: list[dict]) -> None:
    for result in results:
        assert None not in result.values() and "note" not in result, result


# --- ClipClient, against a live server ---


def test_clip_client_text_query_returns_fetchable_images_with_captions(clip_client, live, data):
    client = clip_client.ClipClient(  # test:tiny's image vectors are all alike: deduplication would keep one
        url=f"{live.base}/knn-service", indice_name=INDEX, num_images=5, deduplicate=False
    )
    results = client.query(text=data.dataset.rows()[3]["text"])
    assert len(results) == 5
    for r in results:
        assert {"id", "similarity", "url", "caption"} <= r.keys()
        assert r["url"] == f"{live.base}/v1/items/{r['id']}/image"
    _no_nulls(results)
    scores = [r["similarity"] for r in results]
    assert scores == sorted(scores, reverse=True)
    image = httpx.get(results[0]["url"])
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/")


def test_clip_client_image_query_from_a_file_finds_the_same_image(clip_client, live, data):
    client = clip_client.ClipClient(url=f"{live.base}/knn-service", indice_name=INDEX, num_images=3, deduplicate=False)
    results = client.query(image=str(data.image(3)))  # ClipClient sends the file base64-encoded
    assert results[0]["id"] == data.ids[data.dataset.rows()[3]["id"]]
    assert results[0]["similarity"] > 0.999
    texts = clip_client.ClipClient(
        url=f"{live.base}/knn-service", indice_name=INDEX, modality=clip_client.Modality.TEXT, num_images=3
    ).query(image=str(data.image(3)))
    assert len(texts) == 3 and all("caption" in r for r in texts)


def test_clip_client_embedding_query(clip_client, live, data):
    target = data.ids["text-only"]
    vector = live.app.state.search.snapshot.indexes["text"].index.index.reconstruct(target)
    client = clip_client.ClipClient(
        url=f"{live.base}/knn-service", indice_name=INDEX, modality=clip_client.Modality.TEXT, num_images=2
    )
    results = client.query(embedding_input=(vector * 3).tolist())  # normalised by the server
    assert results[0]["id"] == target and results[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert "url" not in results[0] and results[0]["caption"] == "a caption that has no image"
    wrong = client.query(embedding_input=[0.5] * (len(vector) + 1))
    assert wrong["code"] == "embedding_dim_mismatch"


def test_clip_client_deduplicate_drops_the_copies(clip_client, live, data):
    copies = {data.ids[data.dataset.rows()[0]["id"]], data.ids["copy-1"], data.ids["copy-2"]}
    caption = data.dataset.rows()[0]["text"]

    def query(dedupe: bool) -> list[dict]:
        client = clip_client.ClipClient(
            url=f"{live.base}/knn-service",
            indice_name=INDEX,
            modality=clip_client.Modality.TEXT,  # test:tiny's image vectors are all alike; its texts are not
            num_images=10,
            deduplicate=dedupe,
        )
        return client.query(text=caption)

    plain, deduped = query(False), query(True)
    assert {r["id"] for r in plain[:3]} == copies  # identical captions: identical vectors, top three
    kept = [r["id"] for r in deduped if r["id"] in copies]
    assert kept == [plain[0]["id"]]  # one copy stays: the best-ranked
    assert len(deduped) == 10 and len({r["id"] for r in deduped}) == 10  # refilled to num_images


def test_results_past_num_images_carry_only_id_and_similarity(live):
    body = {"text": "a red circle", "num_images": 2, "num_result_ids": 6, "indice_name": INDEX}
    response = httpx.post(f"{live.base}/knn-service", content=json.dumps(body))
    results = response.json()
    assert response.status_code == 200 and len(results) == 6
    assert all("url" in r and "caption" in r for r in results[:2])
    assert [set(r) for r in results[2:]] == [{"id", "similarity"}] * 4


# --- the front end, from another origin, in Chromium ---


RENDERED = """base => {
  const root = document.querySelector('clip-front').shadowRoot;
  const pics = [...root.querySelectorAll('img.pic')];
  return pics.length >= 5 && pics.every(p => p.src.startsWith(base + '/v1/items/') && p.complete && p.naturalWidth > 0)
    ? pics.map(p => p.src) : null;
}"""


def test_clip_front_end_searches_and_shows_our_images(browser, live, data):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live.static}/?back={live.base}&index={INDEX}")
    page.wait_for_function("() => (document.querySelector('clip-front').indices || []).includes('crossmodal')")
    page.locator("label", has_text="Hide (near) duplicate images").locator("input").click()
    with page.expect_response(lambda r: r.url == f"{live.base}/knn-service") as answer:
        page.fill("#searchBar", data.dataset.rows()[5]["text"])
        page.press("#searchBar", "Enter")
    assert answer.value.status == 200
    sources = page.wait_for_function(RENDERED, arg=live.base, timeout=20_000).json_value()
    assert len(set(sources)) == len(sources)

    figure = page.locator("figure").first
    figure.hover()  # the "similar images" button shows on hover; it sends our own image URL
    with page.expect_response(lambda r: r.url == f"{live.base}/knn-service") as similar:
        figure.locator("img.subImageSearch").click()
    assert similar.value.status == 200
    assert similar.value.request.post_data_json["image_url"].startswith(f"{live.base}/v1/items/")
    with page.expect_response(lambda r: r.url == f"{live.base}/knn-service") as upload:
        page.set_input_files("#filechooser", str(data.image(7)))
    assert upload.value.status == 200 and upload.value.request.post_data_json["image"]
    page.wait_for_function(RENDERED, arg=live.base, timeout=20_000)
    screenshot(page, "clip-front")
    assert errors == []


# --- the contract's edges ---


def test_indices_list_and_a_text_plain_body(plain):
    assert plain.get("/indices-list").json() == [INDEX]
    response = _knn(plain, text="a red circle", modality="image", num_images=3, indice_name=INDEX)
    assert response.status_code == 200 and len(response.json()) == 3


def test_cors_preflight_and_headers_only_where_configured(live, plain):
    origin = {"origin": live.static}
    preflight = httpx.options(
        f"{live.base}/knn-service",
        headers={**origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization"},
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert httpx.get(f"{live.base}/indices-list", headers=origin).headers["access-control-allow-origin"] == "*"
    refused = httpx.post(f"{live.base}/knn-service", content=b"{", headers=origin)
    assert refused.status_code == 422 and refused.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-origin" not in plain.get("/indices-list", headers=origin).headers


def test_image_url_is_off_by_default_and_private_addresses_are_refused(live, plain, strict, data):
    url = f"{live.static}/query-images/{data.image(2).name}"
    off = _knn(plain, image_url=url)
    assert off.status_code == 403 and off.json()["code"] == "image_url_fetch_disabled"
    loopback = _knn(strict, image_url=url)
    assert loopback.status_code == 422 and loopback.json()["code"] == "image_url_refused"
    assert "not a public address" in loopback.json()["detail"]
    for scheme in ("file:///etc/passwd", "ftp://example.org/a.png"):
        assert _knn(strict, image_url=scheme).json()["code"] == "image_url_refused"
    fetched = httpx.post(f"{live.base}/knn-service", content=json.dumps({"image_url": url, "num_images": 2}))
    assert fetched.status_code == 200 and fetched.json()[0]["id"] == data.ids[data.dataset.rows()[2]["id"]]


def test_own_image_urls_are_resolved_without_fetching(plain, data):
    item = data.ids[data.dataset.rows()[4]["id"]]
    for url in (f"http://testserver/v1/items/{item}/image", f"/v1/items/{item}/image"):
        response = _knn(plain, image_url=url, num_images=1)
        assert response.status_code == 200 and response.json()[0]["id"] == item


def test_null_fields_are_left_out(plain, data):
    images = _knn(plain, text="a shape", modality="image", num_images=100, num_result_ids=100).json()
    texts = _knn(plain, text="a shape", modality="text", num_images=100, num_result_ids=100).json()
    _no_nulls(images + texts)
    by_id = {r["id"]: r for r in images + texts}
    assert "caption" not in by_id[data.ids["image-only"]] and "url" in by_id[data.ids["image-only"]]
    assert "url" not in by_id[data.ids["text-only"]] and "caption" in by_id[data.ids["text-only"]]


def test_metadata(plain, data):
    assert plain.post("/metadata", content=json.dumps({"ids": [], "indice_name": INDEX})).json() == []
    wanted = [data.ids["text-only"], 10**9, data.ids["copy-1"]]
    found = plain.post("/metadata", content=json.dumps({"ids": wanted, "indice_name": INDEX})).json()
    assert [m["id"] for m in found] == [wanted[0], wanted[2]]  # in order; an unknown id is left out
    assert found[0]["metadata"] == {"caption": "a caption that has no image"}
    assert found[1]["metadata"]["url"] == f"http://testserver/v1/items/{wanted[2]}/image"


def test_num_result_ids_is_clamped_and_aesthetic_fields_may_be_strings(plain, strict, data):
    asked = dict(text="a red circle", num_images=40, num_result_ids=3000, indice_name=INDEX)
    every = _knn(plain, **asked, aesthetic_score="", aesthetic_weight="0.5", use_mclip=False).json()
    assert len(every) == len(data.ids) - 1  # the whole image index (one item has no image)
    assert len(_knn(strict, **asked, aesthetic_score="9", use_safety_model=True).json()) == 5  # max_k


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 422, "invalid_json"),
        (b"[1, 2]", 422, "invalid_json"),
        (b'{"text": NaN}', 422, "invalid_json"),
        (b'{"text": 5}', 422, "invalid_request"),
        (b'{"text": "a", "num_images": "5"}', 422, "invalid_request"),
        (b'{"text": "a", "num_images": 0}', 422, "invalid_request"),
        (b'{"text": "a", "deduplicate": "yes"}', 422, "invalid_request"),
        (b'{"text": "a", "modality": "video"}', 422, "invalid_request"),
        (b'{"text": "a", "aesthetic_score": "x"}', 422, "invalid_request"),
        (b'{"text": "a", "aesthetic_score": 12}', 422, "invalid_request"),
        (b'{"text": "a", "indice_name": "laion5B"}', 404, "unknown_index"),
        (b'{"text": "", "image": null}', 422, "no_query"),
        (b'{"image": "not base64!"}', 422, "invalid_base64"),
        (b'{"image": "aGVsbG8="}', 415, "not_an_image"),
        (b'{"embedding_input": [true, false]}', 422, "invalid_request"),
        (b'{"embedding_input": [0, 0]}', 422, "embedding_dim_mismatch"),
    ],
)
def test_bad_knn_requests_are_4xx_in_our_error_shape(plain, body, status, code):
    response = plain.post("/knn-service", content=body)
    assert (response.status_code, response.json()["code"]) == (status, code), response.json()
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "body", [b'{"ids": ["a"]}', b'{"ids": [true]}', b'{"ids": 5}', b"{}", b'{"ids": [], "indice_name": "x"}']
)
def test_bad_metadata_requests_are_4xx(plain, body):
    response = plain.post("/metadata", content=body)
    assert 400 <= response.status_code < 500 and {"detail", "code"} <= response.json().keys()


def test_search_keys_are_respected(strict):
    assert strict.get("/indices-list").status_code == 200
    anonymous = strict.get("/indices-list", headers={"X-API-Key": ""})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "missing_api_key"
    bearer = {"X-API-Key": "", "Authorization": f"Bearer {strict.headers['X-API-Key']}"}
    assert _knn(strict, headers=bearer, text="a red circle").status_code == 200
    assert _knn(strict, headers={"X-API-Key": ""}, text="a red circle").status_code == 401
    metadata = strict.post("/metadata", content=b'{"ids": []}', headers={"X-API-Key": "cmk_wrong_key"})
    assert metadata.status_code == 401 and metadata.json()["code"] == "invalid_api_key"


def test_deduplicate_falls_back_where_the_index_cannot_give_its_vectors(plain, monkeypatch):
    real = clip_routes.run_search

    def ivf_like(state, session_factory, settings, encode, opts):
        if opts.dedupe is not None:
            raise SearchRefused(400, "dedupe_unsupported", "this index cannot give back its vectors")
        return real(state, session_factory, settings, encode, opts)

    monkeypatch.setattr(clip_routes, "run_search", ivf_like)
    response = _knn(plain, text="a red circle", num_images=3, deduplicate=True)
    assert response.status_code == 200 and len(response.json()) == 3
    assert response.headers["x-crossmodal-deduplicated"] == "unavailable"
    assert _knn(plain, text="a red circle", deduplicate=False).headers["x-crossmodal-deduplicated"] == "off"
