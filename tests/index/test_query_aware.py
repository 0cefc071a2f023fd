"""Query-aware HNSW edges, checked against a naive reference of the same rule."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index import query_aware


def _hnsw(n=2000, d=16, m=8, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    index = faiss.index_factory(d, f"IDMap2,HNSW{m},Flat", faiss.METRIC_INNER_PRODUCT)
    index.add_with_ids(xb, np.arange(n, dtype=np.int64) * 7 + 3)
    return index, xb


def reference(lists: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Each query proposes pivot <-> neighbour edges with the neighbour's rank; a node takes its proposals
    not already in its list, lowest rank first (then lowest target), while it has free slots."""
    proposals: dict[int, dict[int, int]] = {}
    for row in nb.tolist():
        pivot = row[0]
        for rank, other in enumerate(row[1:], start=1):
            if pivot < 0 or other < 0 or pivot == other:
                continue
            for a, b in ((pivot, other), (other, pivot)):
                best = proposals.setdefault(a, {})
                best[b] = min(best.get(b, rank), rank)
    out = lists.copy()
    for a, wanted in proposals.items():
        row = out[a]
        for b, _ in sorted(wanted.items(), key=lambda kv: (kv[1], kv[0])):
            used = int((row >= 0).sum())
            if used < len(row) and b not in row[:used]:
                row[used] = b
    return out


def test_edges_fill_free_slots_as_the_reference_does():
    index, _ = _hnsw()
    n = index.ntotal
    hnsw = query_aware.hnsw_of(index)
    _, _, before = query_aware.level0_lists(hnsw, n)
    assert (before < 0).any(), "the test needs free slots"
    rng = np.random.default_rng(1)
    nb = rng.integers(0, n, size=(400, 6))
    nb[rng.random(nb.shape) < 0.05] = -1
    counts = query_aware.add_query_edges(index, nb)
    _, _, after = query_aware.level0_lists(hnsw, n)
    np.testing.assert_array_equal(after, reference(before, nb))
    assert counts["added"] == int((after >= 0).sum() - (before >= 0).sum()) > 0
    kept = before >= 0
    np.testing.assert_array_equal(after[kept], before[kept])  # no edge of the original graph is lost
    used = (after >= 0).sum(axis=1)
    assert all((row[:u] >= 0).all() and (row[u:] < 0).all() for row, u in zip(after, used, strict=True))


def test_the_graph_still_searches_and_round_trips(tmp_path):
    index, xb = _hnsw()
    nb = np.argsort(-(xb[:300] @ xb.T), axis=1)[:, :8]  # exact neighbours of 300 queries
    query_aware.add_query_edges(index, nb)
    _, I = index.search(xb[:50], 1)
    assert (I[:, 0] == np.arange(50) * 7 + 3).mean() > 0.95
    faiss.write_index(index, str(tmp_path / "qa.faiss"))
    loaded = faiss.read_index(str(tmp_path / "qa.faiss"))
    np.testing.assert_array_equal(
        faiss.vector_to_array(query_aware.hnsw_of(loaded).neighbors),
        faiss.vector_to_array(query_aware.hnsw_of(index).neighbors),
    )


def test_rows_of_maps_ids_and_rejects_bad_input():
    index, _ = _hnsw(n=100)
    np.testing.assert_array_equal(query_aware.rows_of(index, np.array([3, 10, 696, 5])), [0, 1, 99, -1])
    with pytest.raises(ValueError, match="past the end"):
        query_aware.add_query_edges(index, np.array([[0, 100]]))
    with pytest.raises(ValueError, match="HNSW"):
        query_aware.add_query_edges(faiss.IndexFlatIP(4), np.array([[0, 1]]))
    assert query_aware.add_query_edges(index, np.zeros((3, 1), np.int64))["added"] == 0
