"""What the index benchmarks measure with: recall, QPS, bytes, recall-QPS sweeps, and the exact baselines.

Kept apart from ``bench_index`` (the entry point) so that the ladder's part of the benchmark
(``_ladder_bench``, ``_ladder_report``) and the entry point both stand on it, and none on the other.
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger("bench_index")


def qps(index, xq: np.ndarray, k: int, batch: int, budget_s: float = 10.0) -> float:
    """Queries a second searching ``xq`` in batches of ``batch``, one batch after another, for up to ``budget_s``."""
    index.search(xq[:batch], k)  # warm-up
    done, t0 = 0, time.perf_counter()
    while done < len(xq):
        index.search(xq[done : done + batch], k)
        done += len(xq[done : done + batch])
        if time.perf_counter() - t0 > budget_s:
            break
    return done / (time.perf_counter() - t0)


def evaluate(index, xq: np.ndarray, gt: tuple[np.ndarray, np.ndarray], k: int) -> dict:
    from index.tune import measure_recall

    gt_D, gt_I = gt
    return {
        "recall": measure_recall(index, xq, gt_I, k, gt_D),
        "qps_1": qps(index, xq, k, 1),
        "qps_64": qps(index, xq, k, 64),
    }


def index_bytes(index) -> int:
    import faiss

    from index.partitioned import parts_of

    return sum(int(faiss.serialize_index(part).nbytes) for part in parts_of(index))


def search_param_of(index) -> tuple[str | None, list[int]]:
    """The knob of an index we did not plan (autofaiss's) and values to sweep."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        top = int(np.log2(min(ivf.nlist, 4096)))
        return "nprobe", [1 << i for i in range(top + 1)]
    if _hnsw_inside(index):
        from index.factory import EF_SEARCH

        return "efSearch", list(EF_SEARCH)
    return None, []


def _hnsw_inside(index) -> bool:
    import faiss

    inner = faiss.downcast_index(index)
    while hasattr(inner, "index") and not hasattr(inner, "hnsw"):
        inner = faiss.downcast_index(inner.index)
    return hasattr(inner, "hnsw")


def sweep(index, param: str | None, values: list[int], xq, gt, k: int) -> list[dict]:
    """Recall@k and batch-64 QPS at each value of ``param`` (the recall–QPS curve); stops once recall ~ 1."""
    from index.tune import measure_recall, set_search_param

    curve = []
    for v in values if param else [None]:
        if param and v is not None:
            set_search_param(index, param, v)
        recall = measure_recall(index, xq, gt[1], k, gt[0])
        point = {"value": v, "recall": recall, "qps_64": qps(index, xq, k, 64, 5)}
        curve.append(point)
        log.info("  %s=%s recall@%d %.3f  %.0f QPS (batch 64)", param, v, k, point["recall"], point["qps_64"])
        if recall >= 0.999:
            break
    return curve


def at_recall(curve: list[dict], target: float) -> dict | None:
    """The fastest point of ``curve`` whose recall reaches ``target``."""
    ok = [p for p in curve if p["recall"] >= target]
    return max(ok, key=lambda p: p["qps_64"]) if ok else None


# ---------------------------------------------------------------- contenders


class TorchExact:
    """Exact inner-product top-k as one torch matmul + ``topk`` over all threads: a second exact baseline.

    FAISS's ``IndexFlat`` searches one query on one thread and a batch of 64 in
    small BLAS blocks; a plain matrix product is faster for both here, and a
    speed-up is only as honest as the baseline it is measured against.
    """

    def __init__(self, xb: np.ndarray):
        import torch

        self.xb = torch.from_numpy(xb)
        self.ntotal = len(xb)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        D, I = (torch.from_numpy(np.ascontiguousarray(xq, dtype=np.float32)) @ self.xb.T).topk(k, dim=1)
        return D.numpy(), I.numpy()


class ServiceExact:
    """The service's search, ``index.flat.search``: its exact path for ``IDMap2,Flat``, FAISS for other kinds."""

    def __init__(self, index):
        self.index, self.ntotal = index, index.ntotal

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from index import flat

        return flat.search(self.index, xq, k)
