"""Query-aware HNSW: graph edges between corpus vectors that answer the same training query.

Text queries are out of distribution for an image index: a caption's nearest images need not be
near one another in image space, so the image graph has no path between them, and HNSW's greedy
walk stops at the first good one (recall@10 0.50 on caption queries where image queries reach
0.99; docs/findings.md, F12). RoarGraph (Chen et al., "RoarGraph: A Projected Bipartite Graph
for Efficient Cross-Modal Approximate Nearest Neighbor Search", PVLDB 17, 2024) builds its graph
from the query distribution instead: each training query's nearest corpus vectors are linked to
the nearest of them (the query's *pivot*), so a walk that reaches one answer of a query like it
reaches the rest.

We keep FAISS's HNSW (its serialisation, memory-mapping refusal, incremental adds and search
are unchanged) and add RoarGraph's projected edges to it: for every training query, pivot ->
neighbour and neighbour -> pivot, closest neighbours first, written into the *free* slots of the
level-0 neighbour lists. FAISS's own pruning leaves about 30% of the 2M level-0 slots empty, so
no edge of the original graph is dropped, the node degree stays bounded by 2M, and the index
file keeps its format. See docs/design.md ("Query-aware index") for why this instead of a full
RoarGraph build.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from index.partitioned import parts_of

NEIGHBOURS = 16  # corpus neighbours a training query projects onto the graph (RoarGraph uses 100 at 10M)


def hnsw_of(index: faiss.Index) -> Any:
    """The ``faiss.HNSW`` graph inside ``index`` (through ``IDMap2`` and a refine stage; a partitioned index's
    first part), or ``None``."""
    inner: Any = faiss.downcast_index(parts_of(index)[0])
    while not hasattr(inner, "hnsw") and (hasattr(inner, "index") or hasattr(inner, "base_index")):
        inner = faiss.downcast_index(inner.index if hasattr(inner, "index") else inner.base_index)
    return inner.hnsw if hasattr(inner, "hnsw") else None


def level0_lists(hnsw: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(neighbors, slots, lists)``: the flat neighbour array, each node's level-0 slot positions ``(n, L0)``,
    and a copy of its level-0 lists (``-1`` = free; a list's used slots come first)."""
    neighbors = faiss.vector_to_array(hnsw.neighbors)
    offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)[:n]
    width = int(faiss.vector_to_array(hnsw.cum_nneighbor_per_level)[1])
    slots = offsets[:, None] + np.arange(width)[None, :]
    return neighbors, slots, neighbors[slots]


def add_query_edges(index: faiss.Index, neighbours: np.ndarray) -> dict:
    """Add projected edges to the HNSW in ``index`` in place; ``neighbours`` is ``(m, L)``: each training
    query's nearest corpus vectors as *row positions* in the index, nearest first (``-1`` = none).

    Returns counts: the edges proposed, added, and left out because the node's list was full.
    """
    hnsw = hnsw_of(index)
    if hnsw is None:
        raise ValueError("query edges need an HNSW index")
    n = int(index.ntotal)
    nb = np.asarray(neighbours, dtype=np.int64)
    if nb.ndim != 2 or nb.shape[1] < 2:
        return {"proposed": 0, "added": 0, "full": 0}
    if nb.max(initial=-1) >= n:
        raise ValueError("a neighbour row is past the end of the index")
    neighbors, slots, lists = level0_lists(hnsw, n)
    edges = _projected_edges(nb)
    keep = _absent(edges, lists)
    edges = edges[keep]
    # each node takes its edges in order (closest neighbours first) while it has free slots
    used = (lists >= 0).sum(axis=1)
    order = np.lexsort((edges[:, 2], edges[:, 0]))
    edges = edges[order]
    first = np.searchsorted(edges[:, 0], edges[:, 0], side="left")
    position = used[edges[:, 0]] + (np.arange(len(edges)) - first)
    fits = position < lists.shape[1]
    src, dst, position = edges[fits, 0], edges[fits, 1], position[fits]
    lists[src, position] = dst
    neighbors[slots] = lists
    faiss.copy_array_to_vector(neighbors, hnsw.neighbors)
    return {"proposed": int(len(keep)), "added": int(fits.sum()), "full": int((~fits).sum())}


def _projected_edges(nb: np.ndarray) -> np.ndarray:
    """``(e, 3)`` unique edges ``(from, to, rank)``: each query's pivot (nearest) to its other neighbours and
    back; ``rank`` is the neighbour's rank for the query (the lowest, where several queries propose one edge)."""
    pivot = np.repeat(nb[:, 0], nb.shape[1] - 1)
    other = nb[:, 1:].reshape(-1)
    rank = np.tile(np.arange(1, nb.shape[1]), len(nb))
    ok = (pivot >= 0) & (other >= 0) & (pivot != other)
    pivot, other, rank = pivot[ok], other[ok], rank[ok]
    both = np.concatenate([np.stack([pivot, other, rank], 1), np.stack([other, pivot, rank], 1)])
    both = both[np.lexsort((both[:, 2], both[:, 1], both[:, 0]))]
    first = np.ones(len(both), dtype=bool)
    first[1:] = (both[1:, 0] != both[:-1, 0]) | (both[1:, 1] != both[:-1, 1])
    return both[first]


def _absent(edges: np.ndarray, lists: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Which ``edges`` are not in the graph already."""
    out = np.empty(len(edges), dtype=bool)
    for i0 in range(0, len(edges), chunk):
        e = edges[i0 : i0 + chunk]
        out[i0 : i0 + chunk] = ~(lists[e[:, 0]] == e[:, 1:2]).any(axis=1)
    return out


def rows_of(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """Row positions in ``index`` (an ``IDMap2``) of item ``ids``; ``-1`` for ids it does not hold."""
    if not hasattr(index, "id_map"):
        return np.asarray(ids, dtype=np.int64)
    id_map = faiss.vector_to_array(index.id_map)
    order = np.argsort(id_map, kind="stable")
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(id_map[order], ids)
    pos = np.minimum(pos, len(order) - 1)
    found = id_map[order][pos] == ids
    return np.where(found, order[pos], -1)
