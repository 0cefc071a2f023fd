"""Measure an index against exact search and pick its fastest setting that reaches a target recall.

Recall@k here is ``|retrieved ∩ true top-k| / k`` averaged over queries, with
one allowance for ties: when several items score exactly the k-th best score
(duplicate images, re-uploaded captions), any of them is a correct k-th
answer. ``exact_ground_truth`` therefore returns the top k *plus* every item
tied with the k-th score, and ``recall_at_k`` accepts those. "Exactly" means
within ``TIE_TOL``: float32 dot products of unit vectors computed by different
kernels may differ in the last bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import faiss
import numpy as np

from index import flat
from index.builder import ShardIterFactory, last_occurrence_masks
from index.factory import IndexPlan
from index.partitioned import parts_of

TIE_TOL = 1e-6


def exact_ground_truth(shard_iter_factory: ShardIterFactory, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k of ``xq`` over the shards, streamed: ``(D, I)``, ``I`` holding DB ids.

    The result has ``K >= k`` columns: column ``k..K-1`` only hold items tied
    with the k-th score (padding is ``-inf`` / ``-1``). A repeated id counts
    once, with its vector from the last shard holding it (as the builder does).
    """
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    K = 2 * k
    while True:
        D, I, n = _stream_knn(shard_iter_factory, xq, K)
        tied = ((D >= D[:, k - 1 : k] - TIE_TOL) & (I >= 0)).sum(axis=1)
        if tied.max(initial=0) < K or K >= n:  # every tie fits: none can hide past column K
            width = max(k, int(tied.max(initial=0)))
            D, I = D[:, :width].copy(), I[:, :width].copy()
            pad = np.arange(width)[None, :] >= np.maximum(tied, k)[:, None]
            D[pad], I[pad] = -np.inf, -1
            return D, I
        K *= 2


def _stream_knn(shard_iter_factory: ShardIterFactory, xq: np.ndarray, K: int):
    """Top-K over all shards with ``faiss.knn`` per shard merged in a ``ResultHeap``."""
    heap = faiss.ResultHeap(len(xq), K, keep_max=True)
    id_chunks: list[np.ndarray] = []
    for ids, x in shard_iter_factory():
        id_chunks.append(np.asarray(ids, dtype=np.int64))
        _add_shard(heap, xq, x, id_chunks[-1], K)
    masks = last_occurrence_masks(id_chunks)
    if masks is not None:  # rare: redo the pass without superseded rows
        heap = faiss.ResultHeap(len(xq), K, keep_max=True)
        for (ids, x), keep in zip(shard_iter_factory(), masks, strict=True):
            _add_shard(heap, xq, np.asarray(x)[keep], np.asarray(ids, dtype=np.int64)[keep], K)
    heap.finalize()
    heap.D[heap.I < 0] = -np.inf  # unfilled slots hold -FLT_MAX
    n = sum(int(m.sum()) for m in masks) if masks is not None else sum(len(c) for c in id_chunks)
    return heap.D, heap.I, n


def _add_shard(heap: faiss.ResultHeap, xq: np.ndarray, x: np.ndarray, ids: np.ndarray, K: int) -> None:
    if len(ids):
        x = np.ascontiguousarray(x, dtype=np.float32)
        D, I = faiss.knn(xq, x, min(K, len(ids)), faiss.METRIC_INNER_PRODUCT)
        heap.add_result(D, np.where(I >= 0, ids[np.maximum(I, 0)], -1))


def recall_at_k(I: np.ndarray, gt_I: np.ndarray, k: int, gt_D: np.ndarray | None = None) -> float:
    """Mean over queries of ``|I[:, :k] ∩ truth| / k``; truth is ``gt_I[:, :k]`` plus, given ``gt_D``, its ties."""
    if gt_D is None:
        accepted = gt_I[:, :k]
    else:
        tied = gt_D >= gt_D[:, k - 1 : k] - TIE_TOL
        tied[:, :k] = True
        accepted = np.where(tied, gt_I, -1)
    hits = 0
    for got, ok in zip(I[:, :k], accepted, strict=True):
        hits += min(k, len(np.intersect1d(got[got >= 0], ok[ok >= 0])))
    return hits / (k * len(I))


def measure_recall(
    index: faiss.Index, xq: np.ndarray, gt_I: np.ndarray, k: int, gt_D: np.ndarray | None = None
) -> float:
    """Search ``index`` for ``xq`` at its current settings and score it with :func:`recall_at_k`."""
    _, I = index.search(np.ascontiguousarray(xq, dtype=np.float32), k)
    return recall_at_k(I, gt_I, k, gt_D)


@dataclass
class TunePoint:
    value: int | None  # of the search parameter; None for exact indexes
    recall: float
    qps: float


@dataclass
class TuneResult:
    param: str | None
    value: int | None
    recall: float
    qps: float
    target_recall: float
    reached: bool
    curve: list[TunePoint] = field(default_factory=list)
    note: str = ""


def set_search_param(index: faiss.Index, name: str, value: int) -> None:
    """Set ``nprobe`` / ``efSearch`` through any ``IDMap2`` / ``OPQ`` / GPU wrapping."""
    space = faiss.GpuParameterSpace() if hasattr(faiss, "GpuParameterSpace") else faiss.ParameterSpace()
    for part in parts_of(index):  # every part of a partitioned index (index.parts) alike
        space.set_index_parameter(part, name, value)


def set_refine_factor(index: faiss.Index, k_factor: float) -> None:
    """How many candidates per result a refine stage (``...,Refine(...)``) re-ranks."""
    for part in parts_of(index):
        faiss.ParameterSpace().set_index_parameter(part, "k_factor_rf", k_factor)


def tune(
    index: faiss.Index,
    plan: IndexPlan,
    xq: np.ndarray,
    gt_I: np.ndarray,
    k: int = 10,
    target_recall: float = 0.95,
    *,
    gt_D: np.ndarray | None = None,
) -> TuneResult:
    """Set ``plan.search_param`` to its smallest candidate whose measured recall@k reaches the target.

    Candidates are tried in ascending (slower) order; recall grows with them,
    so the scan stops at the first one that reaches the target. Each point of
    the curve is one timed batch search of ``xq`` (held-out queries, not in the
    training sample). When no candidate reaches the target, the one with the
    best recall is kept and ``reached`` is False. The index is left set to the
    chosen value.
    """
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    param = plan.search_param
    values: list[int | None] = list(plan.candidates) if param else [None]
    if param:
        set_search_param(index, param, plan.candidates[0])
    index.search(xq[:16], k)  # warm-up, so the first timing is not an outlier
    curve = []
    for value in values:
        if param and value is not None:
            set_search_param(index, param, value)
        t0 = time.perf_counter()
        _, I = index.search(xq, k)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        curve.append(TunePoint(value, recall_at_k(I, gt_I, k, gt_D), len(xq) / elapsed))
        if curve[-1].recall >= target_recall:
            break
    best = curve[-1] if curve[-1].recall >= target_recall else max(curve, key=lambda p: p.recall)
    reached = best.recall >= target_recall
    if param and best.value is not None:
        set_search_param(index, param, best.value)
    note = (
        f"{param or 'exact search'}={best.value}: recall@{k} {best.recall:.3f} at {best.qps:.0f} QPS"
        if reached
        else f"target recall@{k} {target_recall} unreachable; best is {param}={best.value} with {best.recall:.3f}"
    )
    return TuneResult(param, best.value, best.recall, best.qps, target_recall, reached, curve, note)


def measure_qps(
    index: faiss.Index, xq: np.ndarray, k: int = 10, *, batch: int = 1, budget_s: float = 1.0, max_batches: int = 200
) -> float:
    """Queries a second through the service's search path (``index.flat.search``), ``batch`` queries a
    call, one call after another over ``xq`` (cycled), for about ``budget_s`` or ``max_batches`` calls."""
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    flat.search(index, xq[:batch], k)  # warm-up
    done = calls = 0
    t0 = time.perf_counter()
    while calls < max_batches and (calls == 0 or time.perf_counter() - t0 < budget_s):
        start = (calls * batch) % max(len(xq) - batch + 1, 1)
        q = xq[start : start + batch]
        flat.search(index, q, k)
        done += len(q)
        calls += 1
    return done / max(time.perf_counter() - t0, 1e-9)
