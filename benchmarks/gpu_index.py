"""FAISS IVF on 1M x 512 vectors: build and search on the GPU against the CPU (GPU check).

Needs a FAISS GPU build (`pip install -e '.[gpu]'`); without one it says so and exits 0
after the CPU half. ``--n`` shrinks the corpus for a smoke test.

    .venv/bin/python benchmarks/gpu_index.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss  # noqa: E402

from benchmarks.bench_index import mixture_dataset  # noqa: E402
from index.builder import array_shards, build_index  # noqa: E402
from index.factory import make_plan  # noqa: E402
from index.gpu import gpu_available, to_gpu  # noqa: E402
from index.tune import measure_recall, set_search_param  # noqa: E402


def qps(index, xq, batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(xq), batch):
        index.search(xq[i : i + batch], 10)
    return len(xq) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--nq", type=int, default=2000)
    ap.add_argument("--nprobe", type=int, default=32)
    args = ap.parse_args()
    # the hard mixture of bench_index.py: 20 vectors a component, nprobe=1 recalls < 0.5
    mix = mixture_dataset(args.n, args.d, max(50, args.n // 20), 0.75, args.nq)
    xb, xq = mix["xb"], mix["xq_eval"]
    ids = np.arange(args.n, dtype=np.int64) * 7 + 3
    gt = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    gt_ids = ids[gt]
    plan = make_plan("ivf_flat", args.n, args.d)
    out = {"n": args.n, "d": args.d, "factory": plan.factory, "nprobe": args.nprobe, "gpus": gpu_available()}
    t0 = time.perf_counter()
    cpu = build_index(array_shards(ids, xb), args.d, plan)
    out["cpu_build_s"] = time.perf_counter() - t0
    set_search_param(cpu, "nprobe", args.nprobe)
    out["cpu_recall_at_10"] = measure_recall(cpu, xq, gt_ids, 10)
    out["cpu_qps_single"] = qps(cpu, xq[:500], 1)
    out["cpu_qps_batch64"] = qps(cpu, xq, 64)
    if gpu_available():
        t0 = time.perf_counter()
        gpu = to_gpu(faiss.index_factory(args.d, plan.factory.replace("IDMap2,", "IDMap,"), faiss.METRIC_INNER_PRODUCT))
        sample = xb[np.random.default_rng(0).choice(args.n, size=min(args.n, plan.train_sample), replace=False)]
        gpu.train(sample)
        gpu.add_with_ids(xb, ids)
        out["gpu_build_s"] = time.perf_counter() - t0
        set_search_param(gpu, "nprobe", args.nprobe)
        out["gpu_recall_at_10"] = measure_recall(gpu, xq, gt_ids, 10)
        out["gpu_qps_single"] = qps(gpu, xq[:500], 1)
        out["gpu_qps_batch64"] = qps(gpu, xq, 64)
        out["gpu_vs_cpu_qps_batch64"] = out["gpu_qps_batch64"] / out["cpu_qps_batch64"]
    else:
        out["note"] = "no FAISS GPU build or no GPU: CPU half only"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
