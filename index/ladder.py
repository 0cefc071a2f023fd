"""The measured ladder: build every rung that fits, tune each on the queries the index will serve,
keep the fastest that reaches the target recall.

An image index in a cross-modal service mostly answers *text* queries, which are out of
distribution for it: HNSW that reaches recall@10 0.99 on image queries reached 0.50 on caption
queries at any efSearch, while IVF-Flat reached 0.96 (docs/findings.md, F12). No rule of thumb
over ``(n, d)`` predicts that, so for an ``auto`` index nothing is assumed: each rung of
``index.factory.ladder`` (exact search included) is built, tuned on held-out queries of the
modality it will serve to the smallest setting that reaches the target recall, and timed one
query at a time (the service's latency) and 64 at a time. The published rung is the fastest
single-query one among those that reached the target; if none did, the one with the best recall.
Every rung's measurements are kept in the index's stats, so the choice can be checked.

Below ``EXACT_BELOW`` vectors, exact search takes well under a millisecond a query and nothing
is measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import faiss
import numpy as np

from index import flat, query_aware, tune
from index.builder import array_shards, build_index
from index.factory import IndexPlan

log = logging.getLogger(__name__)

RECALL_K = 10
EXACT_BELOW = 10_000  # vectors under which exact search is < 1 ms a query at d=512: no ladder
QA_WORK = 2 * 10**12  # multiply-adds spent on the training queries' exact neighbours (~1 min on 2 cores)
QA_MIN_QUERIES, QA_MAX_QUERIES = 1_000, 50_000
# Candidates a refine stage re-ranks per result: a coarse 4-bit PQ ranks text queries on an image index
# badly (recall 0.70 at 16x where image queries had 0.99, bench_index on a 50k x 512 mixture), so the
# ladder measures how much re-ranking the served queries need.
K_FACTORS = (8, 16, 32, 64, 128, 256)
# A graph on 1-byte codes (``HNSW32,SQ8,Refine(Flat)``) finds the right candidates and only orders them
# a little wrong: a few times k is enough, and more would only raise the effective efSearch (FAISS walks
# with max(efSearch, k * k_factor)), which is efSearch's job.
GRAPH_K_FACTORS = (1, 2, 4)
# A walk on half the dimensions (PCA) ranks its candidates less well: it needs more re-ranked (the 1M
# benchmark's ladder settled on 64: docs/benchmarks.md, index-mixture).
PCA_K_FACTORS = (4, 16, 64)
Progress = Callable[[str, int, int], None]


@dataclass
class Queries:
    """What the ladder is measured on.

    ``served``: held-out queries of the modality the index will answer (for an image index, text
    vectors), tuned on. ``same``: queries of the index's own modality, whose recall is reported
    at the chosen setting but not tuned on. ``train``: more queries like ``served``, disjoint from
    them, that the query-aware rung learns its edges from (``None``: no query-aware rung).
    """

    served: np.ndarray
    served_name: str = "served"
    same: np.ndarray | None = None
    same_name: str = "same"
    train: np.ndarray | None = None


@dataclass
class Rung:
    """One measured rung of the ladder."""

    kind: str
    factory: str
    build_seconds: float
    memory_bytes: int
    recall: float  # recall@10 on the served queries at the chosen setting
    reached: bool
    qps_single: float
    qps_batch: float
    search_param: str | None = None
    search_value: int | None = None
    recall_same: float | None = None
    curve: list[dict] = field(default_factory=list)
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_stats(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {} and v != []}


def better(a: Rung, b: Rung | None) -> bool:
    """Is ``a`` a better choice than ``b``: reaching the target beats missing it; among rungs that reach it
    the faster single query wins; among those that miss, the higher recall."""
    if b is None:
        return True
    if a.reached != b.reached:
        return a.reached
    return a.qps_single > b.qps_single if a.reached else (a.recall, a.qps_single) > (b.recall, b.qps_single)


def measure(
    ids: np.ndarray,
    xb: np.ndarray,
    queries: Queries,
    plans: list[IndexPlan],
    target_recall: float,
    *,
    gpu: bool = False,
    progress: Progress | None = None,
    on_rung: Callable[[faiss.Index, IndexPlan, Rung], None] | None = None,
) -> tuple[faiss.Index, IndexPlan, Rung, list[Rung]]:
    """Build, tune and time every plan; returns the chosen ``(index, plan, rung)`` and every rung measured.

    ``on_rung`` sees each tuned index before the ladder moves on (a benchmark measures it on its own
    held-out queries there); it must leave the index's settings as it found them."""
    source = array_shards(ids, xb)
    gt = tune.exact_ground_truth(source, queries.served, RECALL_K)
    gt_same = tune.exact_ground_truth(source, queries.same, RECALL_K) if queries.same is not None else None
    best: tuple[faiss.Index, IndexPlan, Rung] | None = None
    rungs: list[Rung] = []
    graph = None  # the last hnsw_pca graph built, which the query-aware rung adds its edges to a copy of
    for plan in plans:
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if plan.kind == "flat":
            index = flat.build_exact(xb, ids)
        elif plan.kind == "hnsw_qa":
            assert queries.train is not None
            index = faiss.clone_index(graph) if graph is not None else build_index(source, xb.shape[1], plan)
            extra = add_learned_edges(index, ids, xb, queries.train)
        else:
            index = build_index(source, xb.shape[1], plan, progress=progress, gpu=gpu)
        if plan.kind in ("hnsw_pca", "hnsw_qa"):  # hnsw_qa adds its edges to a copy of the same graph
            graph = index if plan.kind == "hnsw_pca" else None
        rung = _tune_and_time(index, plan, queries, gt, gt_same, target_recall, time.perf_counter() - t0)
        rung.extra.update(extra)
        if plan.parts > 1:
            rung.extra["parts"] = plan.parts
        rungs.append(rung)
        if on_rung is not None:
            on_rung(index, plan, rung)
        log.info("ladder: %s %s", plan.kind, rung.note)
        if best is None or better(rung, best[2]):
            best = (index, plan, rung)
        del index
    assert best is not None
    return best[0], replace(best[1], reason=_why(best[2], rungs)), best[2], rungs


def _tune_and_time(
    index: faiss.Index, plan: IndexPlan, queries: Queries, gt, gt_same, target_recall: float, build_s: float
) -> Rung:
    gt_D, gt_I = gt
    extra: dict[str, Any] = {}
    if plan.search_param:
        refine = ",Refine(" in plan.factory
        factors = _k_factors(plan)
        if refine:  # searched at the most generous re-ranking, then the least re-ranking that keeps the target
            tune.set_refine_factor(index, factors[-1])
        result = tune.tune(index, plan, queries.served, gt_I, k=RECALL_K, target_recall=target_recall, gt_D=gt_D)
        recall, reached, value, note = result.recall, result.reached, result.value, result.note
        if refine:
            least = _least_k_factor(index, queries.served, gt, target_recall, factors) if reached else factors[-1]
            extra["k_factor"] = least
            recall = tune.measure_recall(index, queries.served, gt_I, RECALL_K, gt_D)
            note = f"{note}; k_factor={extra['k_factor']}: recall@10 {recall:.3f}"
        curve = [{"value": p.value, "recall": p.recall, "qps": p.qps} for p in result.curve]
    else:
        _, I = flat.search(index, queries.served, RECALL_K)
        recall = tune.recall_at_k(I, gt_I, RECALL_K, gt_D)
        reached, value, curve, note = recall >= target_recall, None, [], f"exact search: recall@10 {recall:.3f}"
    recall_same = None
    if gt_same is not None and queries.same is not None:
        _, I = flat.search(index, queries.same, RECALL_K)
        recall_same = tune.recall_at_k(I, gt_same[1], RECALL_K, gt_same[0])
    single = tune.measure_qps(index, queries.served, RECALL_K, batch=1)
    batch = tune.measure_qps(index, queries.served, RECALL_K, batch=64)
    return Rung(
        kind=plan.kind,
        factory=plan.factory,
        build_seconds=build_s,
        memory_bytes=plan.memory_bytes,
        recall=recall,
        reached=reached,
        qps_single=single,
        qps_batch=batch,
        search_param=plan.search_param,
        search_value=value,
        recall_same=recall_same,
        curve=curve,
        note=f"{note}; {single:,.0f} QPS single, {batch:,.0f} batch 64",
        extra=extra,
    )


def _k_factors(plan: IndexPlan) -> tuple[int, ...]:
    """The re-ranking depths a refined ``plan`` is tuned over (``factory.refine_k_factor`` is where it starts)."""
    if plan.search_param != "efSearch":
        return K_FACTORS
    return PCA_K_FACTORS if "PCA" in plan.factory else GRAPH_K_FACTORS


def _least_k_factor(index: faiss.Index, xq: np.ndarray, gt, target: float, factors=K_FACTORS) -> int:
    """Set and return the smallest of ``factors`` whose recall reaches ``target`` (the largest, which the
    knob was tuned at, if none does)."""
    for factor in factors:
        tune.set_refine_factor(index, factor)
        if tune.measure_recall(index, xq, gt[1], RECALL_K, gt[0]) >= target:
            return factor
    tune.set_refine_factor(index, factors[-1])
    return factors[-1]


def add_learned_edges(index: faiss.Index, ids: np.ndarray, xb: np.ndarray, train: np.ndarray) -> dict:
    """Query-aware edges (``index.query_aware``) from the exact neighbours of up to ``QA_WORK / (n d)``
    training queries."""
    n, d = xb.shape
    m = int(min(len(train), QA_MAX_QUERIES, max(QA_MIN_QUERIES, QA_WORK // max(n * d, 1))))
    t0 = time.perf_counter()
    k = min(query_aware.NEIGHBOURS, n)
    _, nn_ids = flat._blas_search(np.ascontiguousarray(xb, dtype=np.float32), ids, train[:m], k)
    rows = query_aware.rows_of(index, nn_ids.reshape(-1)).reshape(nn_ids.shape)
    counts = query_aware.add_query_edges(index, rows)
    counts.update(training_queries=m, edge_seconds=time.perf_counter() - t0)
    log.info("query-aware edges from %d training queries: %s", m, counts)
    return {"query_edges": counts}


def _why(chosen: Rung, rungs: list[Rung]) -> str:
    others = ", ".join(f"{r.kind} {r.recall:.3f} @ {r.qps_single:,.0f}" for r in rungs if r is not chosen)
    verdict = "fastest single query at the target recall" if chosen.reached else "none reached the target; best recall"
    return (
        f"measured ladder: {chosen.kind}, {verdict} ({chosen.recall:.3f} recall@10 at {chosen.qps_single:,.0f} QPS); "
        f"others (recall @ QPS single): {others or 'none'}"
    )
