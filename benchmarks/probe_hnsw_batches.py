"""Does FAISS HNSW build a worse graph when the corpus arrives in several ``add`` calls?

Builds ``HNSW32,Flat`` (inner product) on the same vectors, in the same order, once
with a single ``add`` and once in 65,536-row adds (the builder's shard size), for
several random insertion orders, and compares recall@10 at efSearch=64 against exact
search. On the real benchmark embeddings (``bench_index.py --dataset real``, made
first) this is why ``index.builder`` gives HNSW one add call.

    .venv/bin/python benchmarks/probe_hnsw_batches.py [--dataset real|mixture]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

import faiss  # noqa: E402

from benchmarks._report import record  # noqa: E402
from benchmarks.bench_index import mixture_dataset, real_dataset  # noqa: E402
from index.tune import recall_at_k  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=("real", "mixture"), default="real")
    ap.add_argument("--orders", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    data = real_dataset(100_000, 1000) if args.dataset == "real" else mixture_dataset(200_000, 512, 10_000, 0.75, 1000)
    xb0, xq = data["xb"], data["xq_eval"]
    d = xb0.shape[1]
    rows = []
    for seed in range(args.orders):
        xb = xb0[np.random.default_rng(seed).permutation(len(xb0))]
        gt_D, gt_I = faiss.knn(xq, xb, 10, faiss.METRIC_INNER_PRODUCT)
        got = {}
        for name, chunk in (("one add", len(xb)), (f"{args.chunk:,}-row adds", args.chunk)):
            index = faiss.index_factory(d, "HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
            assert isinstance(index, faiss.IndexHNSW)  # the factory hands back the concrete class
            for i in range(0, len(xb), chunk):
                index.add(xb[i : i + chunk])
            index.hnsw.efSearch = args.ef
            got[name] = recall_at_k(index.search(xq, 10)[1], gt_I, 10, gt_D)
        rows.append(got)
        print(seed, got, flush=True)
    names = list(rows[0])
    mean = {n: float(np.mean([r[n] for r in rows])) for n in names}
    lines = [f"| insertion order | {names[0]} | {names[1]} |", "|---|---|---|"]
    lines += [f"| {i} | {r[names[0]]:.3f} | {r[names[1]]:.3f} |" for i, r in enumerate(rows)]
    md = f"""## HNSW: one add vs batched adds (`benchmarks/probe_hnsw_batches.py --dataset {args.dataset}`)

`HNSW32,Flat` on {len(xb0):,} x {d} {args.dataset} vectors, recall@10 at efSearch={args.ef} on
{len(xq)} held-out queries, {args.orders} random insertion orders, same order for both builds.

{chr(10).join(lines)}

Mean recall@10: {names[0]} {mean[names[0]]:.3f}, {names[1]} {mean[names[1]]:.3f}
(ratio {mean[names[1]] / mean[names[0]]:.3f}). `index.builder` therefore adds HNSW vectors in one call.
Reproduce: `.venv/bin/python benchmarks/probe_hnsw_batches.py --dataset {args.dataset}`
"""
    print(md)
    if not args.no_record:
        record(f"hnsw-batches-{args.dataset}", {"rows": rows, "mean": mean, "args": vars(args)}, md)


if __name__ == "__main__":
    main()
