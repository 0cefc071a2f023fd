"""Composite queries (issue 24): the combination against a naive reference, and the service against brute force.

The reference builds the query vector from scratch (each part encoded or read back from the index,
made unit length in a loop, weighted, summed, normalised), scores every live item of the target
modality that passes the filter (``filters.matches``), sorts by (-score, id), cuts at ``min_score``,
de-duplicates by a naive pass and pages: on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import io
import json
import math
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from pydantic import TypeAdapter

from app.db import crud, lexical
from app.db.models import Item
from app.main import create_app
from app.serving import filters, hybrid
from app.serving.composite import combine
from app.serving.query import SearchRefused
from index.candidates import best_first
from tests.helpers.postgres import backend_database
from tests.helpers.service import stack
from training.synthetic.shapes import generate_dataset

N = 40
WINDOW = 12
ADAPTER = TypeAdapter(filters.Filter)

# --- the combination, against a naive reference ---------------------------------------------------


def _naive(vectors, weights):
    total = [0.0] * len(vectors[0])
    for row, w in zip(vectors, weights, strict=True):
        norm = math.sqrt(sum(float(x) * float(x) for x in row))
        for j, x in enumerate(row):
            total[j] += w * float(x) / norm
    size = math.sqrt(sum(t * t for t in total))
    return [t / size for t in total]


_rows = hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.just(8)), elements=st.floats(-1, 1, width=32))
_weights = st.lists(st.floats(-5, 5, allow_nan=False).filter(lambda w: abs(w) > 1e-3), min_size=6, max_size=6)


@settings(max_examples=200, deadline=None)
@given(rows=_rows, weights=_weights)
def test_combine_is_the_normalised_weighted_sum_of_unit_vectors(rows, weights):
    weights = weights[: len(rows)]
    if np.any(np.linalg.norm(rows, axis=1) < 1e-3):
        return
    try:
        got = combine(rows, weights)
    except SearchRefused as e:  # only when the weighted sum really has (almost) no direction
        assert e.status == 400 and e.code == "zero_query"
        units = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        assert np.linalg.norm(np.asarray(weights) @ units) <= 1e-6 * np.abs(weights).sum() * 1.01
        return
    assert got.dtype == np.float32 and got.shape == (8,)
    np.testing.assert_allclose(got, _naive(rows.tolist(), weights), atol=1e-5)
    np.testing.assert_allclose(combine(rows, [3 * w for w in weights]), got, atol=1e-6)  # only ratios matter


@settings(max_examples=100, deadline=None)
@given(rows=_rows, weights=_weights, seed=st.integers(0, 2**32 - 1))
def test_ranking_by_the_combined_vector_is_ranking_by_the_weighted_part_similarities(rows, weights, seed):
    weights = weights[: len(rows)]
    if np.any(np.linalg.norm(rows, axis=1) < 1e-3):
        return
    try:
        q = combine(rows, weights).astype(np.float64)
    except SearchRefused:
        return
    items = np.random.default_rng(seed).normal(size=(30, 8))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    units = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    by_parts = (items @ units.T) @ np.asarray(weights)  # sum_i w_i cos(u_i, x)
    np.testing.assert_allclose(items @ q, by_parts / np.linalg.norm(np.asarray(weights) @ units), atol=1e-5)


@pytest.mark.parametrize(
    ("rows", "weights"),
    [
        ([[1.0, 0.0], [2.0, 0.0]], [1.0, -1.0]),  # the same direction at +1 and -1 (after normalising)
        ([[1.0, 0.0]], [0.0]),
        ([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]),
        ([[0.0, 0.0], [1.0, 0.0]], [1.0, 1.0]),  # a part with no direction
        ([[np.nan, 0.0], [1.0, 0.0]], [1.0, 1.0]),
    ],
)
def test_parts_that_cancel_or_have_no_direction_are_refused(rows, weights):
    with pytest.raises(SearchRefused) as e:
        combine(np.asarray(rows), weights)
    assert e.value.status == 400 and e.value.code == "zero_query"


def test_a_negative_part_alone_ranks_by_dissimilarity():
    np.testing.assert_allclose(combine(np.array([[3.0, 4.0]]), [-2.0]), [-0.6, -0.8], atol=1e-7)


# --- the service against brute force ---------------------------------------------------------------


def _meta(i: int) -> dict:
    return {"colour": ["red", "green", "blue"][i % 3], "group": i // 5}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def svc(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("composite")
    database = backend_database(request, tmp)
    ds = generate_dataset(tmp / "ds", n=N, seed=1, image_size=32)
    rows = ds.rows()
    rows = [dict(r, id=f"item-{i}") for i, r in enumerate(rows)]
    rows += [dict(rows[0], id="copy-a"), dict(rows[0], id="copy-b")]  # ties and near-duplicates
    manifest = tmp / "items.jsonl"
    with manifest.open("w") as f:
        for i, r in enumerate(rows):
            same = 0 if r["id"].startswith("copy-") else i
            image = str((ds.root / r["image"]).resolve())
            f.write(json.dumps({"id": r["id"], "image": image, "text": r["text"], **_meta(same)}))
            f.write("\n")
        for i in range(5):  # text-only items: in the text index only
            f.write(json.dumps({"id": f"text-{i}", "text": f"a small note number {i}", **_meta(i)}) + "\n")
    with database as url, stack(tmp, url, dataset=manifest, hybrid_window=WINDOW) as s:
        with s.session_factory() as session:  # deleted after indexing: a tombstone, never a result
            crud.soft_delete_items(session, external_ids=["item-4", "text-2"])
            session.commit()
        with TestClient(create_app(s.settings)) as client:
            yield client, s.settings, s.session_factory, ds
    shutil.rmtree(tmp, ignore_errors=True)


def _ids(sf, *external: str) -> list[int]:
    with sf() as session:
        found = dict(session.query(Item.external_id, Item.id).filter(Item.external_id.in_(external)))
    return [found[e] for e in external]


def _png(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _live(sf, target: str, spec: dict | None) -> list[int]:
    parsed = ADAPTER.validate_python(spec) if spec else None
    column = Item.image_path if target == "image" else Item.text
    with sf() as session:
        rows = session.query(Item.id, Item.meta).filter(Item.deleted_at.is_(None), column.is_not(None))
        return sorted(i for i, m in rows if parsed is None or filters.matches(m, parsed))


def _query_vector(client, parts: list[dict], target: str) -> np.ndarray:
    """The composite's vector from scratch: each part encoded (or read back) alone, unit length, summed."""
    snap = client.app.state.search.snapshot
    rows = []
    for p in parts:
        if "text" in p:
            v = snap.encoder.encode_texts([p["text"]])[0]
        elif "image_base64" in p:
            v = snap.encoder.encode_images([Image.open(io.BytesIO(base64.b64decode(p["image_base64"])))])[0]
        else:
            index = snap.indexes[p.get("modality", target)].index.index
            v = index.reconstruct_batch(np.array([p["item"]], dtype=np.int64))[0]
        rows.append(v.tolist())
    return np.asarray(_naive(rows, [p.get("weight", 1.0) for p in parts]), dtype=np.float32)


def _reference(client, sf, parts, target="image", spec=None, min_score=None, dedupe=None):
    """[(id, score)] of every live item of ``target`` passing ``spec``, best first, ties by id."""
    ids = np.array(_live(sf, target, spec), dtype=np.int64)
    if not len(ids):
        return []
    index = client.app.state.search.snapshot.indexes[target].index.index
    vectors = index.reconstruct_batch(ids)
    q = _query_vector(client, parts, target)
    scores = np.array([float(v @ q) for v in vectors])  # row by row: equal rows, equal scores
    ranked = sorted(zip(ids.tolist(), scores.tolist(), strict=True), key=lambda h: (-h[1], h[0]))
    if min_score is not None:
        ranked = [h for h in ranked if h[1] >= min_score]
    if dedupe is not None:
        kept: list = []
        for i, s in ranked:
            v = vectors[ids.tolist().index(i)]
            if all(float(v @ w) < dedupe for _, _, w in kept):
                kept.append((i, s, v))
        ranked = [(i, s) for i, s, _ in kept]
    return ranked


def _composite(client, parts, **body) -> dict:
    response = client.post("/v1/search/composite", json={"parts": parts, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _canonical(hits: list[tuple[int, float]]) -> list[int]:
    """Ids in ranked order, by the candidate loop's own tie rule (``index.candidates.best_first``: a run of
    scores each within 1e-6 of the one before, ordered by id). FAISS's BLAS scores two bit-identical
    stored vectors up to an ulp apart (by their rows' places in its blocks), and so may a reference
    computed row by row."""
    _, ids = best_first(np.array([s for _, s in hits], dtype=np.float64), np.array([i for i, _ in hits]))
    return ids.tolist()


def _same(got: dict, expected: list, copies: tuple[int, ...] = ()) -> None:
    """``got`` ranks as ``expected``; ``copies`` (ids of bit-identical items) count as one item: which of
    them ``dedupe`` keeps depends on the ulp noise above, in the service and in the reference alike."""
    one = {c: min(copies) for c in copies}
    same_ids = lambda hits: [(one.get(i, i), s) for i, s in hits]  # noqa: E731
    assert _canonical(same_ids([(h["id"], h["score"]) for h in got["data"]])) == _canonical(same_ids(expected))
    np.testing.assert_allclose([h["score"] for h in got["data"]], [s for _, s in expected], atol=1e-5)


def _parts(sf, ds) -> dict[str, list[dict]]:
    one, two, text_only = _ids(sf, "item-7", "item-12", "text-3")
    image = _png(ds.root / ds.rows()[5]["image"])
    return {
        "text and negative text": [{"text": "a red circle"}, {"text": "blue", "weight": -0.5}],
        "text, item, image": [
            {"text": "a large green square", "weight": 1.0},
            {"item": one, "weight": 0.7},
            {"image_base64": image, "weight": 0.3},
        ],
        "items, one negative": [{"item": one, "weight": 1.0}, {"item": two, "weight": -0.8}],
        "a text-only item's text vector": [{"item": text_only, "modality": "text"}, {"text": "note", "weight": 0.5}],
    }


FILTERS = [None, {"colour": "red"}, {"group": {"in": [0, 2, 5]}}, {"colour": "purple"}]


@pytest.mark.parametrize("target", ["image", "text"])
@pytest.mark.parametrize("spec", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_ranking_equals_brute_force(svc, spec, target):
    client, _, sf, ds = svc
    for name, parts in _parts(sf, ds).items():
        got = _composite(client, parts, target=target, filter=spec, k=200)
        assert got["mode"] == "vector" and all(h["parts"] is None for h in got["data"]), name
        _same(got, _reference(client, sf, parts, target, spec))


def test_pages_join_into_the_whole_ranking_with_ties_ordered_by_id(svc):
    client, _, sf, ds = svc
    parts = _parts(sf, ds)["text, item, image"]
    whole = _reference(client, sf, parts)
    pages: list[dict] = []
    for offset in range(0, len(whole) + 6, 6):
        pages += _composite(client, parts, k=6, offset=offset)["data"]
    _same({"data": pages}, whole)
    single = _composite(client, parts, k=len(whole))["data"]
    assert [h["id"] for h in pages] == [h["id"] for h in single]  # pages join exactly, in the service's own order


def test_min_score_and_dedupe(svc):
    client, _, sf, ds = svc
    parts = _parts(sf, ds)["text and negative text"]
    whole = _reference(client, sf, parts)
    cutoff = (whole[len(whole) // 2][1] + whole[len(whole) // 2 + 1][1]) / 2
    _same(_composite(client, parts, k=200, min_score=cutoff), _reference(client, sf, parts, min_score=cutoff))
    copies = _ids(sf, "item-0", "copy-a", "copy-b")
    for spec in (None, {"colour": "red"}):
        expected = _reference(client, sf, parts, spec=spec, dedupe=0.99999)
        assert len(expected) < len(_reference(client, sf, parts, spec=spec))  # item-0's copies go
        _same(_composite(client, parts, k=200, dedupe=0.99999, filter=spec), expected, copies)
        _same(_composite(client, parts, k=3, offset=2, dedupe=0.99999, filter=spec), expected[2:5], copies)


def test_one_positive_part_is_the_single_query(svc):
    client, _, _, ds = svc
    image = _png(ds.root / ds.rows()[3]["image"])
    for target in ("image", "text"):
        text = client.post("/v1/search/text", json={"query": "a red circle", "mode": "vector", "target": target})
        alone = client.post("/v1/search/image", json={"image_base64": image, "target": target})
        for parts, single in (([{"text": "a red circle"}], text), ([{"image_base64": image, "weight": 2.5}], alone)):
            assert single.status_code == 200
            expected = [(h["id"], h["score"]) for h in single.json()["data"]]
            _same(_composite(client, parts, target=target), expected)


def _rank(hits: list[dict], item_id: int) -> int:
    return next(r for r, h in enumerate(hits, start=1) if h["id"] == item_id)


def test_a_negative_part_moves_its_likes_down_and_a_positive_one_up(svc):
    """An item part at weight w changes the item's score by w more than any other's (its cosine to
    itself is 1, to the others less), so its rank can only fall as w falls, and rise as w rises."""
    client, _, _, _ = svc
    base = [{"text": "a small blue triangle"}]
    before = _composite(client, base, k=200)["data"]
    for item_id in [h["id"] for h in before[:5]]:
        ranks = [_rank(before, item_id)]
        for w in (-0.5, -2.0, -8.0):
            ranks.append(_rank(_composite(client, [*base, {"item": item_id, "weight": w}], k=200)["data"], item_id))
        assert ranks == sorted(ranks) and ranks[-1] > ranks[0], ranks
    for item_id in [h["id"] for h in before[-5:]]:
        ranks = [_rank(before, item_id)]
        for w in (0.5, 2.0, 8.0):
            ranks.append(_rank(_composite(client, [*base, {"item": item_id, "weight": w}], k=200)["data"], item_id))
        assert ranks == sorted(ranks, reverse=True) and ranks[-1] < ranks[0], ranks


def test_hybrid_fuses_the_vector_list_with_the_positive_texts_words(svc):
    client, settings, sf, ds = svc
    parts = [{"text": "a red circle"}, {"text": "square", "weight": -0.7}, {"item": _ids(sf, "item-9")[0]}]
    got = _composite(client, parts, mode="hybrid", k=200)
    vector = _reference(client, sf, parts)[:WINDOW]
    with sf() as session:  # the words of the positive text alone: "square" is not looked for
        lex = lexical.search(session, lexical.terms("a red circle"), "image", WINDOW)
    expected = hybrid.fuse(vector, lex, settings.hybrid_fusion, settings.hybrid_rrf_k, settings.hybrid_vector_weight)
    assert got["mode"] == "hybrid"
    assert [h["id"] for h in got["data"]] == [r.id for r in expected]
    np.testing.assert_allclose([h["score"] for h in got["data"]], [r.score for r in expected], atol=1e-5)
    # no positive text: no words, the vector list alone (fused scores)
    only_items = _composite(client, parts[1:], mode="hybrid", k=5)["data"]
    assert [h["id"] for h in only_items] == [i for i, _ in _reference(client, sf, parts[1:])[:5]]
    assert all(h["parts"]["lexical"] is None for h in only_items)


def test_the_default_mode_is_vector_whatever_the_service_default(svc):
    client, settings, _, _ = svc
    settings.search_mode = "hybrid"
    try:
        assert _composite(client, [{"text": "a red circle"}, {"text": "blue", "weight": -1}])["mode"] == "vector"
    finally:
        settings.search_mode = "vector"


def test_deleted_items_never_come_back(svc):
    client, _, sf, ds = svc
    with sf() as session:
        gone = {i for (i,) in session.query(Item.id).filter(Item.deleted_at.is_not(None))}
    for parts in _parts(sf, ds).values():
        for target in ("image", "text"):
            for mode in ("vector", "hybrid"):
                hits = _composite(client, parts, target=target, mode=mode, k=200)["data"]
                assert not gone & {h["id"] for h in hits}
