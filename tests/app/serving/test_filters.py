"""Metadata filters, paging, min_score and dedupe, each checked against brute force over every item.

The SQL of a filter is checked against the same rule written in Python (``app.serving.filters.matches``)
on SQLite and on the real PostgreSQL server; searches with filters against an exhaustive scan of
the index's own vectors, on both ways a filter is applied (an ID selector for a selective one,
post-filtering of overfetched candidates for a broad one).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from app.db import crud
from app.db.models import Item
from app.main import create_app
from app.serving import filters
from tests.helpers.postgres import backend_database
from tests.helpers.service import stack
from training.synthetic.shapes import generate_dataset

N = 60
COLOURS = ["red", "green", "blue"]


def _meta(i: int, rng: np.random.Generator) -> dict:
    meta = {
        "colour": COLOURS[i % 3],
        "year": int(rng.integers(1990, 2030)),
        "rating": round(float(rng.uniform(0, 5)), 2),
        "taken": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "public": bool(i % 2),
        "group": i // 6,  # six items per group: some filters match few, some many
    }
    if i % 7 == 0:
        meta["year"] = str(meta["year"])  # a string is never a number, whatever it spells
    if i % 11 == 0:
        del meta["colour"]
    return meta


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def svc(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("filters")
    database = backend_database(request, tmp)
    ds = generate_dataset(tmp / "ds", n=N, seed=0, image_size=32)
    rng = np.random.default_rng(0)
    rows = ds.rows()
    # two exact copies of one image: equal scores (paging ties) and near-duplicates (dedupe)
    rows = rows + [dict(rows[0], id="copy-a"), dict(rows[0], id="copy-b")]
    manifest = tmp / "items.jsonl"
    with manifest.open("w") as f:
        for i, r in enumerate(rows):
            image = str((ds.root / r["image"]).resolve())
            f.write(json.dumps({"id": r.get("id", f"item-{i}"), "image": image, "text": r["text"], **_meta(i, rng)}))
            f.write("\n")
    with database as url, stack(tmp, url, dataset=manifest) as s:
        with TestClient(create_app(s.settings)) as client:
            yield client, s.settings, s.session_factory
    shutil.rmtree(tmp, ignore_errors=True)


ADAPTER = TypeAdapter(filters.Filter)
FILTERS = [
    {"colour": "red"},
    {"colour": {"in": ["red", "blue"]}},
    {"year": {"gte": 2000, "lt": 2010}},
    {"year": 2001},
    {"rating": {"gt": 2.5}},
    {"rating": {"lte": 1.0}, "public": True},
    {"taken": {"gte": "2024-03-01", "lte": "2024-06-30"}},
    {"public": False, "colour": "green"},
    {"group": 3},
    {"group": {"in": [1, 4.0]}},
    {"colour": {"in": ["red", 7, True]}},
    {"missing": 1},
    {"colour": "purple"},
]


def _all_items(session_factory) -> dict[int, dict | None]:
    with session_factory() as session:
        return {row.id: row.meta for row in session.query(Item.id, Item.meta).filter(Item.deleted_at.is_(None))}


@pytest.mark.parametrize("spec", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_the_sql_of_a_filter_selects_exactly_what_the_rule_says(svc, spec):
    _, _, sf = svc
    parsed = ADAPTER.validate_python(spec)
    expected = sorted(i for i, meta in _all_items(sf).items() if filters.matches(meta, parsed))
    with sf() as session:
        where = filters.sql_clause(parsed, session.get_bind().dialect.name)
        assert crud.matching_ids(session, where, "image", 10_000) == expected


def _brute_force(client, sf, query: str, spec: dict | None, min_score: float | None = None):
    """Every live item scored against the query from the index's own vectors, filtered, best first."""
    snap = client.app.state.search.snapshot
    index = snap.indexes["image"].index.index
    items = _all_items(sf)
    parsed = ADAPTER.validate_python(spec) if spec else None
    ids = np.array(sorted(i for i, m in items.items() if parsed is None or filters.matches(m, parsed)), np.int64)
    if not len(ids):
        return []
    scores = index.reconstruct_batch(ids) @ snap.encoder.encode_texts([query])[0]
    ranked = sorted(zip(scores.tolist(), ids.tolist(), strict=True), key=lambda h: (-h[0], h[1]))
    return [(s, i) for s, i in ranked if min_score is None or s >= min_score]


def _search(client, **body):
    response = client.post("/v1/search/text", json={"query": "a red circle", **body})
    assert response.status_code == 200, response.text
    return [(hit["score"], hit["id"]) for hit in response.json()["data"]]


def _same(got, expected):
    assert [i for _, i in got] == [i for _, i in expected]
    np.testing.assert_allclose([s for s, _ in got], [s for s, _ in expected], atol=1e-5)


@pytest.mark.parametrize("path", ["id_selector", "post_filter"])
@pytest.mark.parametrize("spec", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_filtered_search_equals_brute_force(svc, spec, path):
    client, settings, sf = svc
    settings.filter_id_selector_limit = 10_000 if path == "id_selector" else 0
    try:
        _same(_search(client, k=8, filter=spec), _brute_force(client, sf, "a red circle", spec)[:8])
    finally:
        settings.filter_id_selector_limit = 20_000


def test_pages_join_into_the_whole_ranking_with_ties_ordered_by_id(svc):
    client, _, sf = svc
    whole = _brute_force(client, sf, "a red circle", None)
    pages = [hit for offset in range(0, len(whole), 7) for hit in _search(client, k=7, offset=offset)]
    _same(pages, whole)
    group = _group(sf)
    tied = [i for _, i in pages if i in group]
    assert tied == sorted(group)  # one image three times: equal scores, ordered by id on every page


def _group(sf) -> set[int]:
    """The ids of the first item and its two copies."""
    with sf() as session:
        first = session.query(Item).order_by(Item.id).first()
        copies = session.query(Item.id).filter(Item.external_id.like("copy-%")).all()
        return {first.id, *(c.id for c in copies)}


def test_min_score_is_a_cutoff_and_scores_are_shown(svc):
    client, _, sf = svc
    whole = _brute_force(client, sf, "a red circle", None)
    # Midway between two scores: a cutoff equal to a score would test float rounding (the service's
    # and this test's dot products differ in the last bits), not the cutoff.
    i = next(j for j in range(len(whole) // 3, len(whole) - 1) if whole[j][0] - whole[j + 1][0] > 1e-4)
    cutoff = (whole[i][0] + whole[i + 1][0]) / 2
    _same(_search(client, k=1000, min_score=cutoff), [h for h in whole if h[0] >= cutoff])


def test_dedupe_drops_near_copies_and_keeps_the_best(svc):
    client, _, sf = svc
    group = _group(sf)
    plain = [i for _, i in _search(client, k=N + 2)]
    deduped = [i for _, i in _search(client, k=N + 2, dedupe=0.99999)]
    assert len(set(plain) & group) == 3 and len(set(deduped) & group) == 1
    assert [i for i in deduped if i in group] == [min(group)]  # equal scores: the lowest id is the best
    # the rest as a naive pass over the ranking says: keep a hit unless it is that close to one kept
    vectors = client.app.state.search.snapshot.indexes["image"].index.index.reconstruct_batch(np.array(plain))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    expected: list[int] = []
    for i, v in zip(plain, vectors, strict=True):
        kept = [vectors[plain.index(j)] for j in expected]
        if all(float(v @ w) < 0.99999 for w in kept):
            expected.append(i)
    assert deduped == expected


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"a b": 1},
        {"year": {}},
        {"year": {"gte": 1, "lt": "2024-01-01"}},
        {"taken": {"gte": "yesterday"}},
        {"year": {"in": []}},
        {"year": {"in": [1], "gte": 0}},
        {"year": {"gte": 1e300}},
        {"year": {"lte": -9007199254740993}},  # -(2**53 + 1): a float would round it into range
        {"year": {"between": [1, 2]}},
        {f"k{i}": 1 for i in range(17)},
        ["colour", "red"],
    ],
)
def test_a_malformed_filter_is_a_422_in_the_error_shape(svc, spec):
    client, _, _ = svc
    response = client.post("/v1/search/text", json={"query": "x", "filter": spec})
    assert response.status_code == 422 and response.json()["code"], response.text
