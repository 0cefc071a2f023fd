"""The index build pipeline: plain values in, a tuned, published index version out.

:func:`build` chooses a rung of the ladder (``index.factory``), builds it, tunes its search
setting to a *measured* recall on the queries it will serve, and publishes it; :func:`extend`
adds new vectors to a copy of a published version without retraining and re-measures its
recall; :func:`plan_update` decides which of the two (if either) an update needs. The caller
(``app.publish``) gathers the vectors and records the result; nothing here knows about the DB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index import flat, store, tune
from index.builder import array_shards, build_index
from index.factory import IndexPlan, choose_index, make_plan

log = logging.getLogger(__name__)

RECALL_K = 10
TUNING_QUERIES = 500
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class IndexPolicy:
    """How to build: the kind (``auto`` walks the ladder), the memory budget, the recall target, the GPU."""

    kind: str = "auto"
    memory_budget_bytes: int = 4 * 2**30
    target_recall: float = 0.95
    gpu: bool = False


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


def build(
    ids: np.ndarray,
    xb: np.ndarray,
    xq: np.ndarray,
    out_dir: Path,
    policy: IndexPolicy,
    meta: dict | None = None,
    progress: Progress | None = None,
) -> BuiltIndex:
    """Choose, build, tune on ``xq`` and publish an index over ``(ids, xb)`` into ``out_dir``.

    An automatically chosen HNSW that cannot reach the target (greedy graph search gets lost
    on queries far from every corpus vector: text queries on an image index) is compared with
    the best-fitting IVF rung, and the one with the higher measured recall is published.
    """
    n, d = xb.shape
    plan = (
        choose_index(n, d, policy.memory_budget_bytes, gpu=policy.gpu)
        if policy.kind == "auto"
        else make_plan(policy.kind, n, d, gpu=policy.gpu)
    )
    log.info("index for %d x %d: %s %s", n, d, plan.factory, plan.reason)
    t0 = time.perf_counter()
    stats: dict[str, Any]
    if plan.kind == "flat":
        index, stats = flat.build_exact(xb, ids), {"recall_at_10": 1.0, "exact": True}
    else:
        index, plan, stats = _build_tuned(ids, xb, xq, plan, policy, progress)
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


def _build_tuned(
    ids: np.ndarray, xb: np.ndarray, xq: np.ndarray, plan: IndexPlan, policy: IndexPolicy, progress: Progress | None
) -> tuple[faiss.Index, IndexPlan, dict]:
    n, d = xb.shape
    source = array_shards(ids, xb)
    gt_D, gt_I = tune.exact_ground_truth(source, xq, RECALL_K)

    def build_and_tune(p: IndexPlan) -> tuple[faiss.Index, tune.TuneResult]:
        built = build_index(source, d, p, progress=progress, gpu=policy.gpu)
        return built, tune.tune(built, p, xq, gt_I, k=RECALL_K, target_recall=policy.target_recall, gt_D=gt_D)

    index, result = build_and_tune(plan)
    fallback_from = None
    if policy.kind == "auto" and plan.kind == "hnsw" and not result.reached:
        alt_plan = choose_index(n, d, policy.memory_budget_bytes, gpu=policy.gpu, allow_hnsw=False)
        log.warning("%s missed the target (%s); trying %s", plan.factory, result.note, alt_plan.factory)
        alt, alt_result = build_and_tune(alt_plan)
        if alt_result.recall > result.recall:
            fallback_from = {"factory": plan.factory, "recall_at_10": result.recall, "note": result.note}
            index, plan, result = alt, alt_plan, alt_result
        del alt
    stats: dict[str, Any] = {
        "recall_at_10": result.recall,
        "exact": False,
        "target_recall": result.target_recall,
        "reached": result.reached,
        "search_param": result.param,
        "search_value": result.value,
        "qps": result.qps,
        "curve": [{"value": p.value, "recall": p.recall, "qps": p.qps} for p in result.curve],
        "note": result.note,
    }
    if fallback_from is not None:
        stats["fallback_from"] = fallback_from
    return index, plan, stats


def _publish(index: faiss.Index, out_dir: Path, factory: str, kind: str, stats: dict, meta: dict | None) -> BuiltIndex:
    store.publish(index, out_dir, {**(meta or {}), "factory": factory, "kind": kind, **stats})
    return BuiltIndex(Path(out_dir), factory, kind, int(index.ntotal), int(index.d), stats)
