"""bench_index's measured-ladder part: the service's own ladder (``index.ladder``) on the benchmark's
queries, every rung measured on held-out queries of both kinds, with its recall-QPS curves."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    import faiss

log = logging.getLogger("bench_index")
CURVE_QUERIES = 300


def curve(index, plan, data: dict, k: int, budget_s: float = 2.0) -> list[dict]:
    """Recall@k on both query kinds and QPS (single, batch 64) at each value of the rung's knob; stops
    once the served recall is ~1. Restores the knob."""
    from benchmarks._index_measure import qps
    from index import store
    from index.tune import measure_recall, set_search_param

    if not plan.search_param:
        return []
    tuned = store.search_params(index).get(plan.search_param)
    q, gt = data["xq_eval"][:CURVE_QUERIES], tuple(a[:CURVE_QUERIES] for a in data["gt_eval"])
    qs, gts = data["xq_same"][:CURVE_QUERIES], tuple(a[:CURVE_QUERIES] for a in data["gt_same"])
    points = []
    for value in plan.candidates:
        set_search_param(index, plan.search_param, value)
        p = {"value": value, "recall": measure_recall(index, q, gt[1], k, gt[0]),
             "recall_same": measure_recall(index, qs, gts[1], k, gts[0]),
             "qps_1": qps(index, q, k, 1, budget_s), "qps_64": qps(index, q, k, 64, budget_s)}  # fmt: skip
        points.append(p)
        log.info("  %s=%s: recall %.3f (same %.3f), %.0f QPS single, %.0f batch 64", plan.search_param, value,
                 p["recall"], p["recall_same"], p["qps_1"], p["qps_64"])  # fmt: skip
        if p["recall"] >= 0.999:
            break
    if tuned is not None:
        set_search_param(index, plan.search_param, tuned)
    return points


def run_ladder(
    data: dict, k: int, budget: int, target: float, kinds=None, progress=None, alternatives=()
) -> tuple[list[dict], dict]:
    """Measure the service's ladder; returns one row a rung (``chosen`` marks the published one) and totals.

    ``alternatives``: kinds outside the service's ladder measured the same way after it, for comparison
    (rows marked ``alternative``; never chosen, and not in the ladder's build time)."""
    from benchmarks._index_measure import ServiceExact, index_bytes, qps
    from index import factory, ladder, pipeline
    from index.tune import measure_recall

    xb = data["xb"]
    n, d = xb.shape
    ids = np.arange(n, dtype=np.int64)
    train = data.get("xq_train")
    cores = pipeline.search_cores()
    plans = factory.ladder(n, d, budget, query_aware=train is not None, kinds=kinds, parts=cores)
    queries = ladder.Queries(data["xq_tune"], "served", data["xq_same_tune"], "same", train)
    rows: list[dict] = []
    spent = [0.0]  # seconds inside on_rung: the benchmark's own measuring, not the ladder's

    def on_rung(index, plan, rung) -> None:
        t_in = time.perf_counter()
        # The service's search path, for every kind; measure_recall only calls its .search(xq, k).
        served = cast("faiss.Index", ServiceExact(index))
        row = {"name": f"ours: {plan.kind}", "kind": plan.kind, "factory": plan.factory, "status": "ok",
               "build_s": rung.build_seconds, "index_bytes": index_bytes(index),
               "params": (f"{rung.search_param}={rung.search_value}" if rung.search_param else "")
               + (f", k_factor={rung.extra['k_factor']}" if "k_factor" in rung.extra else ""),
               "tuned_recall": rung.recall, "reached": rung.reached, "extra": rung.extra,
               "recall": measure_recall(served, data["xq_eval"], data["gt_eval"][1], k, data["gt_eval"][0]),
               "recall_same": measure_recall(served, data["xq_same"], data["gt_same"][1], k, data["gt_same"][0]),
               "qps_1": qps(served, data["xq_eval"], k, 1, 10.0),
               "qps_64": qps(served, data["xq_eval"], k, 64, 10.0)}  # fmt: skip
        log.info("%s: recall %.3f (same-modality %.3f), %.1f QPS single, %.1f batch 64", row["name"], row["recall"],
                 row["recall_same"], row["qps_1"], row["qps_64"])  # fmt: skip
        row["curve"] = curve(index, plan, data, k)
        rows.append(row)
        spent[0] += time.perf_counter() - t_in

    t0 = time.perf_counter()
    _, plan, rung, _ = ladder.measure(ids, xb, queries, plans, target, progress=progress, on_rung=on_rung)
    total = time.perf_counter() - t0 - spent[0]
    for row in rows:
        row["chosen"] = row["kind"] == plan.kind
    alt_plans = factory.ladder(n, d, budget, kinds=tuple(alternatives), parts=cores)
    alt_plans = [p for p in alt_plans if p.kind in alternatives]
    if alt_plans:
        first = len(rows)
        ladder.measure(ids, xb, queries, alt_plans, target, progress=progress, on_rung=on_rung)
        for row in rows[first:]:
            row.update(chosen=False, alternative=True, name=row["name"] + " (not in the service's ladder)")
    return rows, {"ladder_s": total, "chosen": plan.kind, "reason": plan.reason}
