"""Lexical and hybrid search (issue 24), each checked against brute force on SQLite and PostgreSQL.

The reference builds each ranked list from scratch: the vector list from the index's own vectors
and the encoder, the lexical list from the engine's unfiltered ranking, filtered in Python
(``filters.matches``), cut at the window, fused (``hybrid.fuse``), cut at ``min_score``,
de-duplicated by a naive pass and paged. Fusion itself is checked against hand-computed values.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import TypeAdapter

from app.db import crud, lexical
from app.db.models import Item
from app.main import create_app
from app.serving import filters, hybrid
from index.candidates import VectorsUnavailable
from tests.app.db.test_lexical import NASTY
from tests.helpers.postgres import backend_database
from tests.helpers.service import stack
from training.synthetic.shapes import generate_dataset

N = 48
WINDOW = 15
QUERY = "a red circle"
ADAPTER = TypeAdapter(filters.Filter)

# --- fusion, by hand ----------------------------------------------------------------------------


def test_rrf_is_the_weighted_sum_of_reciprocal_ranks_over_the_best_possible():
    fused = hybrid.fuse([(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 4.0), (4, 1.0)], "rrf", 60, 0.5)
    best = 1 / 61
    expected = {1: 0.5 / 61 / best, 2: 0.5 / 62 / best, 3: (0.5 / 63 + 0.5 / 61) / best, 4: 0.5 / 62 / best}
    assert [r.id for r in fused] == [3, 1, 2, 4]  # 2 and 4 tie (rank 2 in one list each): by id
    for r in fused:
        assert r.score == pytest.approx(expected[r.id])
    three = next(r for r in fused if r.id == 3)
    assert three.vector == hybrid.Part(3, 0.7) and three.lexical == hybrid.Part(1, pytest.approx(0.8))
    assert next(r for r in fused if r.id == 4).vector is None
    assert hybrid.fuse([(1, 0.9)], [(1, 9.0)], "rrf", 60, 0.5)[0].score == pytest.approx(1.0)


def test_rrf_weights_and_k():
    fused = hybrid.fuse([(1, 0.9)], [(2, 1.0)], "rrf", 0, 0.8)
    assert [(r.id, round(r.score, 6)) for r in fused] == [(1, 0.8), (2, 0.2)]


def test_the_vector_weight_moves_with_the_relevance_of_the_vector_lists_first_hit():
    assert hybrid.vector_weight(0.5, 0.2, None) == 0.5  # no calibration: the configured weight
    assert [hybrid.vector_weight(0.5, 0.2, r) for r in (0.0, 0.25, 0.5, 1.0)] == pytest.approx([0.3, 0.4, 0.5, 0.7])
    assert hybrid.vector_weight(0.6, 0.0, 0.9) == 0.6  # no swing: fixed
    assert hybrid.vector_weight(0.9, 0.5, 1.0) == 1.0 and hybrid.vector_weight(0.1, 0.5, 0.0) == 0.0  # within [0, 1]
    # a list the model is sure of wins the tie of two first hits; one it is unsure of loses it
    vector, lexical = [(1, 0.9), (2, 0.1)], [(3, 5.0), (4, 1.0)]
    assert hybrid.fuse(vector, lexical, "rrf", 1.0, hybrid.vector_weight(0.5, 0.2, 0.9))[0].id == 1
    assert hybrid.fuse(vector, lexical, "rrf", 1.0, hybrid.vector_weight(0.5, 0.2, 0.1))[0].id == 3


def test_relative_fusion_scales_each_list_to_0_1():
    fused = hybrid.fuse([(1, 0.5), (2, 0.3), (3, 0.1)], [(3, 3.0), (2, 1.0)], "relative", 0, 0.5)
    # vector: 1 -> 1, 2 -> 0.5, 3 -> 0; lexical (3/4 and 1/2 scaled): 3 -> 1, 2 -> 0
    assert [(r.id, round(r.score, 6)) for r in fused] == [(1, 0.5), (3, 0.5), (2, 0.25)]
    assert hybrid.fuse([(1, 0.2)], [], "relative", 0, 0.5)[0].score == pytest.approx(0.5)


def test_lexical_score_is_monotone_into_0_1():
    raw = [0.0, 1e-6, 0.5, 1.0, 7.0, 1e9]
    mapped = [hybrid.lexical_score(r) for r in raw]
    assert mapped == sorted(mapped) and mapped[0] == 0.0 and mapped[-1] < 1.0 and mapped[3] == 0.5


def test_cut_dedupes_over_stored_vectors_and_keeps_hits_without_one():
    v = {1: np.array([1.0, 0.0]), 2: np.array([1.0, 0.0]), 3: np.array([0.0, 1.0])}
    ranked = [hybrid.Ranked(i, 1.0 - i / 10, None, hybrid.Part(i, 0.1)) for i in (1, 2, 4, 3)]
    kept = hybrid.cut(ranked, None, 0.99, lambda ids: {i: v[i] for i in ids if i in v})
    assert [r.id for r in kept] == [1, 4, 3]
    assert [r.id for r in hybrid.cut(ranked, 0.75, None, dict)] == [1, 2]
    with_vector_part = [hybrid.Ranked(1, 1.0, hybrid.Part(1, 0.9), None), hybrid.Ranked(2, 0.5, None, None)]
    with pytest.raises(VectorsUnavailable):
        hybrid.cut(with_vector_part, None, 0.9, lambda ids: {})


# --- the service against brute force ------------------------------------------------------------


def _meta(i: int) -> dict:
    return {"colour": ["red", "green", "blue"][i % 3], "group": i // 6, "note": ["circle", "plain"][i % 2]}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def svc(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hybrid")
    database = backend_database(request, tmp)
    ds = generate_dataset(tmp / "ds", n=N, seed=0, image_size=32)
    rows = ds.rows()
    rows = rows + [dict(rows[0], id="copy-a"), dict(rows[0], id="copy-b")]  # ties and near-duplicates
    manifest = tmp / "items.jsonl"
    with manifest.open("w") as f:
        for i, r in enumerate(rows):
            image = str((ds.root / r["image"]).resolve())
            same = 0 if r.get("id", "").startswith("copy-") else i  # the copies tie with item-0 in every list
            f.write(json.dumps({"id": r.get("id", f"item-{i}"), "image": image, "text": r["text"], **_meta(same)}))
            f.write("\n")
        for i in range(6):  # text-only items: in the text index and the lexical one, never an image result
            f.write(json.dumps({"id": f"text-{i}", "text": f"a red note number {i}", **_meta(i)}) + "\n")
    with database as url, stack(tmp, url, dataset=manifest, hybrid_window=WINDOW) as s:
        with s.session_factory() as session:  # deleted after indexing: a tombstone, never a result
            crud.soft_delete_items(session, external_ids=["item-3", "text-1"])
            session.commit()
        with TestClient(create_app(s.settings)) as client:
            yield client, s.settings, s.session_factory
    shutil.rmtree(tmp, ignore_errors=True)


def _live(sf, target: str, spec: dict | None) -> dict[int, dict | None]:
    parsed = ADAPTER.validate_python(spec) if spec else None
    column = Item.image_path if target == "image" else Item.text
    with sf() as session:
        rows = session.query(Item.id, Item.meta).filter(Item.deleted_at.is_(None), column.is_not(None))
        return {i: m for i, m in rows if parsed is None or filters.matches(m, parsed)}


def _vector_list(client, sf, query, target, spec):
    snap = client.app.state.search.snapshot
    ids = np.array(sorted(_live(sf, target, spec)), dtype=np.int64)
    scores = snap.indexes[target].index.index.reconstruct_batch(ids) @ snap.encoder.encode_texts([query])[0]
    return sorted(zip(ids.tolist(), scores.tolist(), strict=True), key=lambda h: (-h[1], h[0]))


def _words(sf) -> dict[int, set[str]]:
    """Each live item's document as words, by the rule the index is documented to follow."""
    with sf() as session:
        out = {}
        for item in session.query(Item).filter(Item.deleted_at.is_(None)):
            values = " ".join(str(v) for v in (item.meta or {}).values())
            name = (item.image_path or "").rsplit("/", 1)[-1]
            out[item.id] = set(re.findall(r"[^\W_]+", f"{item.text or ''} {values} {name}".lower()))
        return out


def _lexical_list(sf, query, target, spec):
    """The engine's whole unfiltered ranking, checked to match exactly the items sharing a word, then filtered."""
    words = lexical.terms(query)
    with sf() as session:
        everything = lexical.search(session, words, target, 10_000)
    live = _live(sf, target, None)
    documents = _words(sf)
    assert {i for i, _ in everything} == {i for i in live if documents[i] & set(words)}
    assert everything == sorted(everything, key=lambda h: (-h[1], h[0]))
    keep = _live(sf, target, spec)
    return [(i, s) for i, s in everything if i in keep]


def _reference(client, sf, settings, mode, query=QUERY, target="image", spec=None, min_score=None, dedupe=None):
    lex = _lexical_list(sf, query, target, spec)
    if mode == "lexical":
        ranked = hybrid.lexical_only(lex)
    else:
        vec = _vector_list(client, sf, query, target, spec)[:WINDOW]
        ranked = hybrid.fuse(
            vec, lex[:WINDOW], settings.hybrid_fusion, settings.hybrid_rrf_k, settings.hybrid_vector_weight
        )
    if min_score is not None:
        ranked = [r for r in ranked if r.score >= min_score]
    if dedupe is not None:
        index = client.app.state.search.snapshot.indexes[target].index.index
        kept: list = []
        for r in ranked:
            v = index.reconstruct_batch(np.array([r.id]))[0]
            v = v / np.linalg.norm(v)
            if all(float(v @ w) < dedupe for _, w in kept):
                kept.append((r, v))
        ranked = [r for r, _ in kept]
    return ranked


def _search(client, **body):
    response = client.post("/v1/search/text", json={"query": QUERY, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _same(got: dict, expected: list):
    assert [h["id"] for h in got["data"]] == [r.id for r in expected]
    np.testing.assert_allclose([h["score"] for h in got["data"]], [r.score for r in expected], atol=1e-5)
    for hit, r in zip(got["data"], expected, strict=True):
        for name in ("vector", "lexical"):
            part, want = hit["parts"][name], getattr(r, name)
            assert (part is None) == (want is None), (hit, r)
            if want is not None:
                assert part["rank"] == want.rank and part["score"] == pytest.approx(want.score, abs=1e-5)


FILTERS = [None, {"colour": "red"}, {"group": {"in": [0, 2, 5]}}, {"colour": "purple"}]


@pytest.mark.parametrize("target", ["image", "text"])
@pytest.mark.parametrize("spec", FILTERS, ids=[json.dumps(f) for f in FILTERS])
@pytest.mark.parametrize(("mode", "fusion"), [("lexical", "rrf"), ("hybrid", "rrf"), ("hybrid", "relative")])
def test_ranking_equals_brute_force(svc, mode, fusion, spec, target):
    client, settings, sf = svc
    settings.hybrid_fusion = fusion
    try:
        got = _search(client, mode=mode, target=target, filter=spec, k=200)
        assert got["mode"] == mode
        _same(got, _reference(client, sf, settings, mode, target=target, spec=spec))
    finally:
        settings.hybrid_fusion = "rrf"


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_pages_join_into_the_whole_ranking_with_ties_ordered_by_id(svc, mode):
    client, settings, sf = svc
    whole = _reference(client, sf, settings, mode)
    pages = []
    for offset in range(0, len(whole) + 7, 7):
        pages += _search(client, mode=mode, k=7, offset=offset)["data"]
    _same({"data": pages}, whole)
    with sf() as session:
        copies = sorted(
            i for (i,) in session.query(Item.id).filter(Item.external_id.in_(["item-0", "copy-a", "copy-b"]))
        )
    assert [h["id"] for h in pages if h["id"] in copies] == copies  # equal in both lists: ordered by id


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_min_score_bounds_the_mode_score(svc, mode):
    client, settings, sf = svc
    whole = _reference(client, sf, settings, mode)
    i = next(j for j in range(len(whole) // 3, len(whole) - 1) if whole[j].score - whole[j + 1].score > 1e-4)
    cutoff = (whole[i].score + whole[i + 1].score) / 2
    _same(_search(client, mode=mode, k=200, min_score=cutoff), _reference(client, sf, settings, mode, min_score=cutoff))


@pytest.mark.parametrize("spec", [None, {"colour": "red"}])
@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_dedupe_keeps_the_best_of_near_copies(svc, mode, spec):
    client, settings, sf = svc
    got = _search(client, mode=mode, k=200, dedupe=0.99999, filter=spec)
    expected = _reference(client, sf, settings, mode, spec=spec, dedupe=0.99999)
    _same(got, expected)
    page = _search(client, mode=mode, k=3, offset=2, dedupe=0.99999, filter=spec)
    _same(page, expected[2:5])


def test_deleted_items_never_come_back(svc):
    client, _, sf = svc
    with sf() as session:
        gone = {i for (i,) in session.query(Item.id).filter(Item.deleted_at.is_not(None))}
    for mode in ("lexical", "hybrid", "vector"):
        for target in ("image", "text"):
            for query in (QUERY, "note number 1", "red"):
                hits = _search(client, query=query, mode=mode, target=target, k=200)["data"]
                assert not gone & {h["id"] for h in hits}


def test_the_default_mode_is_the_configured_one_for_text_and_vector_for_images(svc):
    client, settings, _ = svc
    assert _search(client)["mode"] == settings.search_mode
    vector = _search(client, mode="vector")
    assert vector["mode"] == "vector" and all(h["parts"] is None for h in vector["data"])
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    response = client.post("/v1/search/image", json={"image_base64": image})
    assert response.status_code == 200 and response.json()["mode"] == "vector"


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_an_image_query_cannot_match_words(svc, mode):
    client, _, _ = svc
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "PNG")
    as_json = client.post(
        "/v1/search/image", json={"image_base64": base64.b64encode(buf.getvalue()).decode(), "mode": mode}
    )
    as_form = client.post(
        "/v1/search/image", files={"file": ("q.png", buf.getvalue(), "image/png")}, data={"mode": mode}
    )
    for response in (as_json, as_form):
        assert response.status_code == 422 and response.json()["code"] == "mode_needs_text", response.text
        assert "text query" in response.json()["detail"]


@pytest.mark.parametrize("query", [q for q in NASTY if q.strip() and len(q) <= 1000])
@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_nasty_queries_never_fail(svc, mode, query):
    client, _, _ = svc
    response = client.post("/v1/search/text", json={"query": query, "mode": mode, "k": 5})
    assert response.status_code == 200, response.text
    if not lexical.terms(query):  # nothing to match: lexical is empty, hybrid is the vector list alone
        hits = response.json()["data"]
        assert hits == [] if mode == "lexical" else all(h["parts"]["lexical"] is None for h in hits)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=st.text(min_size=1, max_size=200).filter(lambda q: q.strip()), mode=st.sampled_from(["lexical", "hybrid"]))
def test_any_text_query_is_answered(svc, query, mode):
    client, _, _ = svc
    response = client.post("/v1/search/text", json={"query": query, "mode": mode, "k": 3})
    assert response.status_code == 200, response.text
