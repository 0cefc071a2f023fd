"""Training throughput of a ViT-B-32-sized random open_clip model at batch 256 (GPU check).

Times forward + CLIP loss + backward + AdamW step with AMP on CUDA, both as a raw loop and
through gradient caching (chunk 64), and reports samples/s. ``--small`` shrinks everything
so the script can be smoke-tested on a CPU.

    .venv/bin/python benchmarks/gpu_train.py [--steps 30] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import open_clip  # noqa: E402

from training.gradcache import gradcache_backward  # noqa: E402
from training.losses import ClipLoss  # noqa: E402


def run(model, loss_fn, opt, images, tokens, steps, warmup, chunk, device) -> float:
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    amp = functools.partial(torch.autocast, device_type=device.type, enabled=device.type == "cuda")
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        gradcache_backward(
            functools.partial(model.encode_image, normalize=True),
            functools.partial(model.encode_text, normalize=True),
            images, tokens, loss_fn, chunk_size=chunk or len(images),
            loss_kwargs={"logit_scale": model.logit_scale.exp()}, autocast=amp, scaler=scaler,
        )  # fmt: skip
        scaler.step(opt)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--small", action="store_true", help="tiny shapes for a CPU smoke test")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = "ViT-B-32"
    model = open_clip.create_model(arch, pretrained=None).to(device)
    if args.small:
        args.batch_size, args.steps, args.warmup = 8, 2, 1
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    images = torch.randn(args.batch_size, 3, 224, 224, device=device)
    tokens = torch.randint(1, 49000, (args.batch_size, 77), device=device)
    loss_fn = ClipLoss(learnable=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    out = {"arch": arch, "device": str(device), "batch_size": args.batch_size,
           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}  # fmt: skip
    out["raw_samples_per_s"] = run(model, loss_fn, opt, images, tokens, args.steps, args.warmup, None, device)
    chunk = max(1, args.batch_size // 4)
    out["gradcache_samples_per_s"] = run(model, loss_fn, opt, images, tokens, args.steps, args.warmup, chunk, device)
    out["gradcache_chunk"] = chunk
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
