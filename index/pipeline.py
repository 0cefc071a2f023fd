"""The index build pipeline: plain values in, a tuned, published index version out.

:func:`build` chooses a rung of the ladder (``index.factory``), builds it, tunes its search
setting to a *measured* recall on the queries it will serve, and publishes it; :func:`extend`
adds new vectors to a copy of a published version without retraining and re-measures its
recall; :func:`plan_update` decides which of the two (if either) an update needs. The caller
(``app.pipelines.publish``) gathers the vectors and records the result; nothing here knows about the DB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index import flat, ladder, store, tune
from index.builder import array_shards
from index.factory import ladder as ladder_plans
from index.factory import make_plan

log = logging.getLogger(__name__)

RECALL_K = 10
TUNING_QUERIES = 500
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class IndexPolicy:
    """How to build: the kind (``auto`` measures the ladder), the memory budget, the recall target, the GPU."""

    kind: str = "auto"
    memory_budget_bytes: int = 4 * 2**30
    target_recall: float = 0.95
    gpu: bool = False
    ladder: tuple[str, ...] = ()  # the rungs an ``auto`` index measures; () = ``index.factory.LADDER``


@dataclass
class BuiltIndex:
    """A published index version and what was measured about it."""

    path: Path
    factory: str
    kind: str
    ntotal: int
    dim: int
    stats: dict = field(default_factory=dict)

    @property
    def search_params(self) -> dict:
        return {k: self.stats[k] for k in ("search_param", "search_value") if k in self.stats}


@dataclass(frozen=True)
class UpdatePlan:
    """What an update of a published index needs: nothing, new vectors added, or a rebuild."""

    action: str  # "skip" | "extend" | "rebuild"
    new: np.ndarray  # bool mask over the candidate rows: live and not yet in the index
    tombstones: int  # vectors in the index whose item is no longer live


def tuning_queries(xb: np.ndarray, other: np.ndarray | None, n: int = TUNING_QUERIES, seed: int = 0) -> np.ndarray:
    """Held-out queries for recall tuning: the other modality's vectors (the real workload is
    cross-modal), else corpus vectors with noise so that no query is its own answer."""
    rng = np.random.default_rng(seed)
    if other is None or len(other) < 10:
        xq = xb[rng.choice(len(xb), size=min(n, len(xb)), replace=False)]
        xq = xq + rng.normal(scale=0.05, size=xq.shape).astype(np.float32)
    elif len(other) > n:
        xq = other[rng.choice(len(other), size=n, replace=False)]
    else:
        xq = other
    return np.ascontiguousarray(xq / np.linalg.norm(xq, axis=1, keepdims=True), dtype=np.float32)


def split_queries(
    xb: np.ndarray, other: np.ndarray | None, n: int = TUNING_QUERIES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(tuning, training)`` queries from the other modality's vectors: ``n`` held out for tuning (as
    :func:`tuning_queries`) and the rest, disjoint from them, for the query-aware rung (``None`` when
    there is no other modality, or too little of it to spare)."""
    if other is None or len(other) < 10 + n:
        return tuning_queries(xb, other, n, seed), None
    order = np.random.default_rng(seed).permutation(len(other))
    unit = other / np.linalg.norm(other, axis=1, keepdims=True)
    held, rest = unit[order[:n]], unit[order[n : n + ladder.QA_MAX_QUERIES]]
    return np.ascontiguousarray(held, dtype=np.float32), np.ascontiguousarray(rest, dtype=np.float32)


def plan_update(held: np.ndarray | None, ids: np.ndarray, live: np.ndarray, compact_fraction: float) -> UpdatePlan:
    """``held``: ids in the published index (``None``: there is none); ``ids``/``live``: candidate rows and
    which are live. Deleted items stay in an index as tombstones until they pass ``compact_fraction`` of it."""
    if held is None:
        return UpdatePlan("rebuild" if live.any() else "skip", live, 0)
    new = live & ~np.isin(ids, held)
    tombstones = int((~np.isin(held, ids[live])).sum())
    if tombstones > compact_fraction * len(held):
        return UpdatePlan("rebuild", live, tombstones)
    return UpdatePlan("extend" if new.any() else "skip", new, tombstones)


def search_cores() -> int:
    """The cores one query can be searched on: ``hnsw_split``'s graphs (index.parts), one a core."""
    return max(1, faiss.omp_get_max_threads())


def build(
    ids: np.ndarray,
    xb: np.ndarray,
    xq: np.ndarray,
    out_dir: Path,
    policy: IndexPolicy,
    meta: dict | None = None,
    progress: Progress | None = None,
    *,
    train: np.ndarray | None = None,
    served_name: str = "served",
    same_name: str = "same",
) -> BuiltIndex:
    """Choose, build, tune on ``xq`` and publish an index over ``(ids, xb)`` into ``out_dir``.

    ``xq`` are held-out queries of the modality the index will serve (``served_name``, e.g. ``text``
    for an image index); ``train``, more of them, disjoint from ``xq``, for the query-aware rung. An
    ``auto`` index is the winner of the measured ladder (``index.ladder``); a kind set by the
    operator is built and tuned alone. Recall is also measured on queries of the index's own
    modality (``same_name``: corpus vectors with noise) and stored beside the served one.
    """
    n, d = xb.shape
    t0 = time.perf_counter()
    stats: dict[str, Any]
    if policy.kind == "flat" or (policy.kind == "auto" and n < ladder.EXACT_BELOW):
        why = "set by the operator" if policy.kind == "flat" else f"n < {ladder.EXACT_BELOW:,}: exact is < 1 ms a query"
        plan = replace(make_plan("flat", n, d), reason=f"exact search, {why}")
        index, stats = flat.build_exact(xb, ids), {"recall_at_10": 1.0, "exact": True}
    else:
        if policy.kind == "hnsw_qa" and (train is None or not len(train)):
            raise ValueError("hnsw_qa needs training queries of the modality the index serves")
        query_aware = train is not None and len(train) > 0
        cores = search_cores()
        plans = (
            ladder_plans(
                n,
                d,
                policy.memory_budget_bytes,
                gpu=policy.gpu,
                query_aware=query_aware,
                kinds=policy.ladder,
                parts=cores,
            )
            if policy.kind == "auto"
            else [make_plan(policy.kind, n, d, gpu=policy.gpu, parts=cores)]
        )
        log.info("index for %d x %d: measuring %s", n, d, ", ".join(p.kind for p in plans))
        same = tuning_queries(xb, None, seed=1)
        queries = ladder.Queries(xq, served_name, same, same_name, train if query_aware else None)
        index, plan, rung, rungs = ladder.measure(
            ids, xb, queries, plans, policy.target_recall, gpu=policy.gpu, progress=progress
        )
        stats = _ladder_stats(rung, rungs, policy, queries)
    log.info("index for %d x %d: %s (%s)", n, d, plan.factory, plan.reason)
    stats.update(
        {
            "memory_bytes": plan.memory_bytes,
            "build_seconds": time.perf_counter() - t0,
            "reason": plan.reason,
            "incremental": False,
            "tombstones": 0,
        }
    )
    return _publish(index, out_dir, plan.factory, plan.kind, stats, meta)


def _ladder_stats(rung: ladder.Rung, rungs: list[ladder.Rung], policy: IndexPolicy, queries: ladder.Queries) -> dict:
    by_query = {queries.served_name: rung.recall}
    if rung.recall_same is not None:
        by_query[queries.same_name] = rung.recall_same
    stats: dict[str, Any] = {
        "recall_at_10": rung.recall,
        "recall_by_query": by_query,
        "exact": rung.kind == "flat",
        "target_recall": policy.target_recall,
        "reached": rung.reached,
        "search_param": rung.search_param,
        "search_value": rung.search_value,
        "qps": rung.qps_single,
        "qps_single": rung.qps_single,
        "qps_batch_64": rung.qps_batch,
        "curve": rung.curve,
        "note": rung.note,
        "ladder": [r.as_stats() for r in rungs],
    }
    stats.update(rung.extra)
    return stats


def extend(
    current: store.PublishedIndex,
    new_ids: np.ndarray,
    new_xb: np.ndarray,
    content: tuple[np.ndarray, np.ndarray],
    xq: np.ndarray,
    out_dir: Path,
    tombstones: int = 0,
    meta: dict | None = None,
) -> BuiltIndex:
    """Add ``(new_ids, new_xb)`` to ``current`` (a copy read into RAM, never a mapped one) and publish it.

    ``content`` is every ``(ids, xb)`` the result holds, for re-measuring its recall on ``xq``
    at its stored search setting (an exact index keeps recall 1).
    """
    t0 = time.perf_counter()
    index = current.index
    index.add_with_ids(np.ascontiguousarray(new_xb, dtype=np.float32), np.ascontiguousarray(new_ids, np.int64))
    kept = {k: v for k, v in current.meta.items() if k not in _PUBLISHED_KEYS}
    stats = {**kept, "incremental": True, "added": len(new_ids), "tombstones": tombstones}
    if not stats.get("exact"):
        gt_D, gt_I = tune.exact_ground_truth(array_shards(*content), xq, RECALL_K)
        stats["recall_at_10"] = tune.measure_recall(index, xq, gt_I, RECALL_K, gt_D=gt_D)
    stats["build_seconds"] = time.perf_counter() - t0
    kind = current.kind or ("flat" if stats.get("exact") else "unknown")
    return _publish(index, out_dir, current.meta.get("factory") or store.describe(index), kind, stats, meta)


# Written by publish itself, or naming the caller's row: not carried over from the version extended.
_PUBLISHED_KEYS = {"factory", "kind", "metric", "dim", "ntotal", "published_at", "search_params"}


def _publish(index: faiss.Index, out_dir: Path, factory: str, kind: str, stats: dict, meta: dict | None) -> BuiltIndex:
    store.publish(index, out_dir, {**(meta or {}), "factory": factory, "kind": kind, **stats})
    return BuiltIndex(Path(out_dir), factory, kind, int(index.ntotal), int(index.d), stats)
