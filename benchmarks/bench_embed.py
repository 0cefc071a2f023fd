"""Batch-embedding throughput against the model's raw forward on pre-decoded tensors.

The raw figure is the floor: the same model, batch size and threads, run on tensors
already decoded and preprocessed in memory. The pipeline figure is
``index.embed.embed_sharded`` on PNG files: DataLoader workers decode and preprocess,
the main process encodes, and shards are written to disk (float16, atomically).

    .venv/bin/python benchmarks/bench_embed.py [--n 1024] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()  # before torch loads OpenMP (imported first, its threads would spin)

import torch  # noqa: E402

from benchmarks._report import record  # noqa: E402
from crossmodal_kernel.images import open_image  # noqa: E402
from crossmodal_kernel.loading import load_model  # noqa: E402
from crossmodal_kernel.onnx_encoder import build_encoder  # noqa: E402
from index.embed import embed_sharded  # noqa: E402
from training.synthetic.shapes import generate_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:lit-mini")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runtime", choices=["torch", "onnx"], default="onnx", help="what the pipeline encodes on")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    ds = generate_dataset(tmp / "ds", n=args.n, seed=0)
    paths = [str(ds.root / r["image"]) for r in ds.rows()]
    loaded = load_model(args.model, "cpu")
    encoders = {rt: build_encoder(loaded, rt, tmp / "onnx", batch_size=args.batch_size) for rt in ("torch", "onnx")}
    encoder = encoders[args.runtime]  # what ingestion uses (CROSSMODAL_RUNTIME)

    batch = torch.stack([encoder.preprocess(open_image(p)) for p in paths[: args.batch_size]])
    batches = max(1, args.n // args.batch_size)
    raws = {}
    for rt, each in encoders.items():
        each.encode_image_tensors(batch)  # warm-up
        t0 = time.perf_counter()
        for _ in range(batches):
            each.encode_image_tensors(batch)
        raws[rt] = batches * args.batch_size / (time.perf_counter() - t0)
    raw = raws[args.runtime]

    items = list(enumerate(paths))
    t0 = time.perf_counter()
    report = embed_sharded(encoder, items, tmp / "out", "image", num_workers=args.workers)
    pipeline = report.embedded / (time.perf_counter() - t0)
    ratio = pipeline / raw
    result = {"model": args.model, "n": args.n, "batch_size": args.batch_size, "workers": args.workers,
              "runtime": args.runtime, "threads": torch.get_num_threads(), "raw_images_per_s": raw,
              "raw_images_per_s_by_runtime": raws, "pipeline_images_per_s": pipeline,
              "ratio": ratio, "goal_ratio": 0.9}  # fmt: skip
    md = f"""## Batch embedding throughput (`benchmarks/bench_embed.py`)

`{args.model}` on {args.n} synthetic 128-px PNGs, batch {args.batch_size}, {torch.get_num_threads()} threads,
{args.workers} DataLoader workers, CPU. The pipeline encodes on `{args.runtime}` (`CROSSMODAL_RUNTIME`);
the raw forward of both runtimes is measured in the same run.

| path | images/s |
|---|---|
| raw forward on pre-decoded tensors, torch eager | {raws["torch"]:.1f} |
| raw forward on pre-decoded tensors, ONNX Runtime | {raws["onnx"]:.1f} ({raws["onnx"] / raws["torch"]:.2f}x torch) |
| `embed_sharded` from PNG files on {args.runtime} (decode, preprocess, encode, write shards) | {pipeline:.1f} |
| **ratio pipeline / raw ({args.runtime})** | **{ratio:.2f}x** |

Goal ≥ 0.9x — {"met" if ratio >= 0.9 else "**not met**"}. On 2 cores the decoding workers compete
with the forward pass for the same cores; the raw loop has the machine to itself.
Reproduce: `.venv/bin/python benchmarks/bench_embed.py --n {args.n} --workers {args.workers} --runtime {args.runtime}`
"""
    print(md)
    if not args.no_record:
        record("embed", result, md)


if __name__ == "__main__":
    main()
