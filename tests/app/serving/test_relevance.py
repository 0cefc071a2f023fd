"""Calibrated relevance at query time (issue 24), against brute force on SQLite and PostgreSQL.

A calibration is written onto the active model's row (an isotonic step map, then a Platt curve), the
service reloads it, and every hit's ``relevance`` and every ``min_relevance`` result is checked
against a reference built from scratch: the index's own vectors and the encoder for the cosines,
the engine's lexical ranking, ``hybrid.fuse``, then the cutoffs, a naive de-duplication and the page.
"""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import TypeAdapter

from app.db import crud, lexical
from app.db.models import Item, Model
from app.main import create_app
from app.serving import filters, hybrid
from app.serving.relevance import NOT_FITTED, load_relevance
from index.candidates import best_first
from tests.helpers.postgres import backend_database
from tests.helpers.service import stack
from training.calibration import LEVEL_DEPTH, Calibration
from training.synthetic.shapes import generate_dataset

N = 40
WINDOW = 12
QUERY = "a red circle"
ADAPTER = TypeAdapter(filters.Filter)


def _meta(i: int) -> dict:
    return {"colour": ["red", "green", "blue"][i % 3], "group": i // 5}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def svc(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("relevance")
    database = backend_database(request, tmp)
    ds = generate_dataset(tmp / "ds", n=N, seed=0, image_size=32)
    rows = ds.rows()  # no copies: the ties they make are test_hybrid's, and float noise orders them here
    manifest = tmp / "items.jsonl"
    with manifest.open("w") as f:
        for i, r in enumerate(rows):
            image = str((ds.root / r["image"]).resolve())
            f.write(json.dumps({"id": r.get("id", f"item-{i}"), "image": image, "text": r["text"], **_meta(i)}) + "\n")
        for i in range(5):
            f.write(json.dumps({"id": f"text-{i}", "text": f"a red note number {i}", **_meta(i)}) + "\n")
    with database as url, stack(tmp, url, dataset=manifest, hybrid_window=WINDOW) as s:
        with s.session_factory() as session:  # deleted after indexing: a tombstone, never a result
            assert crud.soft_delete_items(session, external_ids=["000003"])
            session.commit()
        with TestClient(create_app(s.settings)) as client:
            yield client, s.settings, s.session_factory
    shutil.rmtree(tmp, ignore_errors=True)


def _set_calibration(client, sf, maps: dict[str, Calibration] | None, **extra) -> None:
    """Write ``maps`` as the active model's calibration (None: none) and make the service reload it."""
    with sf() as session:
        model = crud.get_active_model(session)
        model.calibration = None if maps is None else {
            "status": "fitted", "dataset": "db", "method": "test", "fitted_at": f"t{np.random.random()}",
            "directions": {d: {"map": m.as_json()} for d, m in maps.items()}, "reasons": {}, **extra,
        }  # fmt: skip
        session.commit()
    client.app.state.search.refresh(force=True)


def _cosines(client, target: str, ids: list[int], query: str | None = None, image=None) -> dict[int, float]:
    snap = client.app.state.search.snapshot
    q = snap.encoder.encode_texts([query])[0] if image is None else snap.encoder.encode_images([image])[0]
    vectors = snap.indexes[target].index.index.reconstruct_batch(np.asarray(ids, dtype=np.int64))
    return dict(zip(ids, (vectors @ q).tolist(), strict=True))


def _live(sf, target: str, spec: dict | None) -> list[int]:
    parsed = ADAPTER.validate_python(spec) if spec else None
    column = Item.image_path if target == "image" else Item.text
    with sf() as session:
        rows = session.query(Item.id, Item.meta).filter(Item.deleted_at.is_(None), column.is_not(None))
        return sorted(i for i, m in rows if parsed is None or filters.matches(m, parsed))


def _level_and_cosines(client, sf, target: str, spec: dict | None, query: str = QUERY):
    """The query's level (its best cosines over the live items, whatever the filter) and the cosines of the items
    the filter keeps, best first, ties by id."""
    everything = _cosines(client, target, _live(sf, target, None), query)
    level = np.mean(sorted(everything.values())[-LEVEL_DEPTH:])
    return level, sorted(((i, everything[i]) for i in _live(sf, target, spec)), key=lambda h: (-h[1], h[0]))


def _weight(settings, mapping, level, vec) -> float:
    """Hybrid's vector weight for this query: the configured one moved by the swing with the relevance of the
    vector list's best hit (0.5 -> 0.3 at relevance 0, 0.7 at 1 with the defaults)."""
    if not vec:
        return settings.hybrid_vector_weight
    top = float(mapping(np.array([vec[0][1]]), level)[0])
    return float(np.clip(settings.hybrid_vector_weight + settings.hybrid_relevance_swing * (2 * top - 1), 0, 1))


def _reference(client, sf, settings, mode, mapping, target="image", spec=None, min_score=None, min_relevance=None,
               dedupe=None, query=QUERY) -> tuple[list[hybrid.Ranked], dict[int, float]]:  # fmt: skip
    """The ranking and each hit's relevance, from scratch (see the module docstring)."""
    level, vec = _level_and_cosines(client, sf, target, spec, query)
    cos = dict(vec)
    with sf() as session:
        lex = [(i, s) for i, s in lexical.search(session, lexical.terms(query), target, 10_000) if i in cos]
    if mode == "vector":
        ranked = [hybrid.Ranked(i, s, None, None) for i, s in vec]
    elif mode == "lexical":
        ranked = hybrid.lexical_only(lex)
    else:
        ranked = hybrid.fuse(vec[:WINDOW], lex[:WINDOW], settings.hybrid_fusion, settings.hybrid_rrf_k,
                             _weight(settings, mapping, level, vec))  # fmt: skip
    relevance = {i: float(mapping(np.array([c]), level)[0]) for i, c in cos.items()}
    if min_score is not None:
        ranked = [r for r in ranked if r.score >= min_score]
    if min_relevance is not None:
        ranked = [r for r in ranked if relevance[r.id] >= min_relevance]
    if dedupe is not None:
        index = client.app.state.search.snapshot.indexes[target].index.index
        kept: list = []
        for r in ranked:
            v = index.reconstruct_batch(np.array([r.id]))[0]
            v = v / np.linalg.norm(v)  # index.dedupe compares directions
            if all(float(v @ w) < dedupe for _, w in kept):
                kept.append((r, v))
        ranked = [r for r, _ in kept]
    return ranked, relevance


def _search(client, **body) -> dict:
    response = client.post("/v1/search/text", json={"query": QUERY, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _in_order(hits: list[tuple[int, float]]) -> list[int]:
    """Ids best first, ties by id, where a tie is within float noise (copies of one image are scored a few
    ulps apart by the index's product and by the reference's): the candidate loop's rule, ``best_first``."""
    _, ids = best_first(np.array([s for _, s in hits], dtype=np.float64), np.array([i for i, _ in hits]))
    return ids.tolist()


def _same(got: list[dict], expected: list[hybrid.Ranked], relevance: dict[int, float]) -> None:
    assert _in_order([(h["id"], h["score"]) for h in got]) == _in_order([(r.id, r.score) for r in expected])
    got = sorted(got, key=lambda h: [r.id for r in expected].index(h["id"]))
    np.testing.assert_allclose([h["score"] for h in got], [r.score for r in expected], atol=1e-5)
    np.testing.assert_allclose([h["relevance"] for h in got], [relevance[r.id] for r in expected], atol=1e-4)


def _maps(client, sf) -> dict[str, dict[str, Calibration]]:
    """Two calibrations of the text -> image and text -> text directions whose cutoffs fall inside the scores."""
    out = {}
    for target in ("image", "text"):
        found = _cosines(client, target, _live(sf, target, None), QUERY).values()
        scores = np.unique(np.round(np.array(list(found)), 5))  # distinct (some items share a caption)
        # each step halfway between two scores, clear of float noise
        lo, mid, hi = ((scores[j] + scores[j + 1]) / 2 for j in (len(scores) * 3 // 10, len(scores) // 2,
                                                                 len(scores) * 8 // 10))  # fmt: skip
        level = float(np.mean(sorted(found)[-LEVEL_DEPTH:]))  # the query's level: each map takes a share off
        steps = Calibration("isotonic", tuple(float(v - 0.3 * level) for v in (lo, mid, hi)), (0.2, 0.5, 0.9),
                            beta=0.3)  # fmt: skip
        slope = 12.0 / max(hi - lo, 1e-3)
        platt = Calibration("platt", a=slope, b=-slope * float(mid - 0.5 * level), beta=0.5)
        out[target] = {"isotonic": steps, "platt": platt}
    return out


MODES = ["vector", "lexical", "hybrid"]
FILTERS = [None, {"colour": "red"}, {"group": {"in": [0, 2, 5]}}]


@pytest.mark.parametrize("method", ["isotonic", "platt"])
@pytest.mark.parametrize("target", ["image", "text"])
def test_every_hit_carries_its_relevance_and_min_relevance_equals_brute_force(svc, method, target):
    client, settings, sf = svc
    maps = _maps(client, sf)
    _set_calibration(client, sf, {"text->image": maps["image"][method], "text->text": maps["text"][method]})
    mapping = maps[target][method]
    for mode in MODES:
        for spec in FILTERS:
            # hybrid: the weight it fuses with, moved off the configured one by the relevance; null in other modes
            weight = (
                _weight(settings, mapping, *_level_and_cosines(client, sf, target, spec)) if mode == "hybrid" else None
            )
            for floor in (None, 0.0, 0.2, 0.5, 0.7, 0.95):
                got = _search(client, mode=mode, target=target, filter=spec, k=200, min_relevance=floor)
                assert got["relevance"]["calibrated"] and got["relevance"]["method"] == method
                expected, relevance = _reference(client, sf, settings, mode, mapping, target, spec, min_relevance=floor)
                _same(got["data"], expected, relevance)
                if weight is None:
                    assert got["vector_weight"] is None
                else:
                    assert got["vector_weight"] == pytest.approx(weight, abs=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_pages_join_and_cutoffs_combine_under_min_relevance(svc, mode):
    client, settings, sf = svc
    maps = _maps(client, sf)
    _set_calibration(client, sf, {"text->image": maps["image"]["isotonic"]})
    mapping = maps["image"]["isotonic"]
    whole, relevance = _reference(client, sf, settings, mode, mapping, min_relevance=0.2)
    pages: list[dict] = []
    for offset in range(0, len(whole) + 5, 5):
        pages += _search(client, mode=mode, k=5, offset=offset, min_relevance=0.2)["data"]
    _same(pages, whole, relevance)
    ordered = sorted({round(r.score, 6) for r in whole})
    # drops the lowest scores (between two hits, clear of noise); PostgreSQL's lexical scores may have two levels
    cutoff = (ordered[0] + ordered[1]) / 2 if len(ordered) > 2 else None
    undeduped, _ = _reference(client, sf, settings, mode, mapping, min_score=cutoff, min_relevance=0.2)
    vectors = client.app.state.search.snapshot.indexes["image"].index.index.reconstruct_batch(
        np.array([r.id for r in undeduped])
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = np.sort((vectors @ vectors.T)[np.triu_indices(len(vectors), 1)])
    dedupe = float(pairs[int(len(pairs) * 0.9)] + pairs[int(len(pairs) * 0.9) + 1]) / 2  # the tiny model's scale
    both = _search(client, mode=mode, k=200, min_relevance=0.2, min_score=cutoff, dedupe=dedupe)
    expected, _ = _reference(client, sf, settings, mode, mapping, min_score=cutoff, min_relevance=0.2, dedupe=dedupe)
    _same(both["data"], expected, relevance)
    assert 1 < len(expected) < len(undeduped) and (cutoff is None or len(undeduped) < len(whole))  # each acted


def test_an_image_query_uses_the_image_direction(svc):
    client, _, sf = svc
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, "PNG")
    image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    live = _live(sf, "image", None)
    cos = _cosines(client, "image", live, image=image)
    scores = np.unique(np.round(list(cos.values()), 5))
    middle = len(scores) // 2
    mapping = Calibration("isotonic", (float(scores[middle] + scores[middle + 1]) / 2,), (0.8,))
    _set_calibration(client, sf, {"image->image": mapping})
    body = {"image_base64": base64.b64encode(buf.getvalue()).decode(), "k": 100, "min_relevance": 0.5}
    got = client.post("/v1/search/image", json=body).json()
    expected = [(i, c) for i, c in cos.items() if c >= mapping.x[0]]
    assert _in_order([(h["id"], h["score"]) for h in got["data"]]) == _in_order(expected) and len(expected) > 3
    assert all(h["relevance"] == 0.8 for h in got["data"]) and got["relevance"]["calibrated"]
    as_form = client.post("/v1/search/image", files={"file": ("q.png", buf.getvalue(), "image/png")},
                          data={"min_relevance": "0.5", "k": "100"})  # fmt: skip
    assert as_form.status_code == 200 and [h["id"] for h in as_form.json()["data"]] == [h["id"] for h in got["data"]]
    text = _search(client, mode="vector")  # no text -> image map: null, and why
    assert all(h["relevance"] is None for h in text["data"]) and "text->image" in text["relevance"]["reason"]


def test_without_a_calibration_relevance_is_null_with_the_reason_and_min_relevance_is_refused(svc):
    client, _, sf = svc
    _set_calibration(client, sf, None)
    for mode in MODES:
        got = _search(client, mode=mode)
        assert got["data"] and all(h["relevance"] is None for h in got["data"])
        assert got["relevance"] == {"calibrated": False, "reason": NOT_FITTED, "method": None, "fitted_on": None,
                                    "fitted_at": None}  # fmt: skip
        refused = client.post("/v1/search/text", json={"query": QUERY, "mode": mode, "min_relevance": 0.5})
        assert refused.status_code == 422 and refused.json()["code"] == "relevance_unavailable"
        assert NOT_FITTED in refused.json()["detail"]
    _set_calibration(client, sf, {}, status="unavailable", reasons={"*": "3 queries; calibration needs 10"})
    assert _search(client)["relevance"]["reason"] == "3 queries; calibration needs 10"


@pytest.mark.parametrize("bad", [-0.1, 1.01, "0.5", True, None, [0.5], "NaN"])
def test_a_bad_min_relevance_is_a_422(svc, bad):
    client, _, _ = svc
    if bad is None:  # JSON's null is no cutoff at all
        assert client.post("/v1/search/text", json={"query": QUERY, "min_relevance": None}).status_code == 200
        return
    response = client.post("/v1/search/text", json={"query": QUERY, "min_relevance": bad})
    assert response.status_code == 422 and "min_relevance" in response.text, response.text
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    form = client.post("/v1/search/image", files={"file": ("q.png", buf.getvalue(), "image/png")},
                       data={"min_relevance": json.dumps(bad)})  # fmt: skip
    assert form.status_code == 422, form.text


def test_a_stored_map_that_does_not_load_is_reported_not_raised():
    loaded = load_relevance({"directions": {"text->image": {"map": {"method": "isotonic", "x": [0.2, 0.1],
                                                                     "y": [0, 1]}}}, "dataset": "db"})  # fmt: skip
    mapping, why = loaded.mapping("text", "image")
    assert mapping is None and "unreadable" in why
    assert loaded.mapping("vector", "image")[0] is None and "vector query" in loaded.mapping("vector", "image")[1]
    assert load_relevance(None).mapping("text", "image") == (None, NOT_FITTED)


def test_deleted_items_never_come_back_under_min_relevance(svc):
    client, _, sf = svc
    maps = _maps(client, sf)
    _set_calibration(client, sf, {"text->image": maps["image"]["platt"]})
    with sf() as session:
        gone = {i for (i,) in session.query(Item.id).filter(Item.deleted_at.is_not(None))}
        assert session.query(Model).count() >= 1
    for mode in MODES:
        hits = _search(client, mode=mode, k=200, min_relevance=0.01)["data"]
        assert hits and not gone & {h["id"] for h in hits}
