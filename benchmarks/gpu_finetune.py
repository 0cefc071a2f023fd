"""The real trainer on CUDA with AMP, against the raw AMP loop of gpu_train.py (GPU check).

`training.trainer.finetune` fine-tunes a random ViT-B-32-sized open_clip model, whole model
unlocked, on synthetic pairs decoded from disk by DataLoader workers, with AMP, gradient
clipping and the LR schedule — the path a user's `crossmodal finetune` takes on a GPU. The
same model, batch and AMP then run as gpu_train.py's raw loop on in-memory tensors (no data
loading, no schedule), and the report is the ratio, as bench_train.py reports it on the CPU.
It also checks that the run ended with a finite loss and wrote a checkpoint.

``--small`` swaps in the tiny test model and a few steps, so the script runs on a CPU in CI.

    python3 benchmarks/gpu_finetune.py [--steps 30] [--batch-size 256] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.gpu_train import run as raw_amp_loop  # noqa: E402
from crossmodal_kernel.encoder import trim_padding  # noqa: E402
from crossmodal_kernel.images import open_image  # noqa: E402
from crossmodal_kernel.loading import load_model  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.locking import apply_locks, set_train_mode
from training.losses import ClipLoss  # noqa: E402
from training.optim import make_optimizer
from training.synthetic.shapes import generate_dataset  # noqa: E402
from training.trainer import finetune


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--small", action="store_true", help="tiny model and shapes for a CPU smoke test")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="gpu-finetune-"))
    if args.small:
        model, args.steps, args.warmup, args.batch_size, args.workers = "test:tiny", 2, 1, 8, 0
    else:  # random weights saved as a checkpoint: nothing is downloaded, and the checkpoint path is exercised
        import open_clip

        weights = tmp / "vit-b-32-random.pt"
        torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), weights)
        model = f"open_clip:ViT-B-32@{weights}"
    ds = generate_dataset(tmp / "ds", n=max(64, args.batch_size * 4), seed=0, image_size=224)
    cfg = TrainConfig.model_validate(
        {
            "model": model,
            "device": device,
            "output_dir": str(tmp / "run"),
            "data": {"manifest": str(ds.manifest), "val_fraction": 0.0, "num_workers": args.workers},
            "lock": {"image_unlocked_groups": None, "text_unlocked_layers": None},
            "optim": {"steps": args.steps + args.warmup, "batch_size": args.batch_size, "warmup_steps": 2},
            "checkpoint_every": 10_000,
            "eval_every": 10_000,
        }
    )
    stamps: list[float] = []
    t0 = time.perf_counter()
    result = finetune(cfg, progress=lambda e: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    trainer = args.steps * args.batch_size / (stamps[-1] - stamps[args.warmup - 1])
    final_loss = result.history[-1]["loss"]

    loaded = load_model(model, device)
    apply_locks(loaded.model, cfg)
    opt = make_optimizer(loaded.model, cfg)
    set_train_mode(loaded.model, cfg)
    rows = ds.rows()[: args.batch_size]
    images = torch.stack([loaded.preprocess(open_image(str(ds.root / r["image"]))) for r in rows]).to(device)
    tokens = trim_padding(loaded.model, loaded.tokenizer([r["text"] for r in rows])).to(device)
    raw = raw_amp_loop(loaded.model, ClipLoss(learnable=False), opt, images, tokens, args.steps, args.warmup, None,
                       torch.device(device))  # fmt: skip
    out = {
        "model": model,
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "batch_size": args.batch_size,
        "steps_timed": args.steps,
        "workers": args.workers,
        "amp": device == "cuda",
        "trainer_samples_per_s": trainer,
        "raw_amp_loop_samples_per_s": raw,
        "ratio_trainer_vs_raw": trainer / raw,
        "trainer_wall_s": wall,
        "final_loss": final_loss,
        "loss_finite": math.isfinite(final_loss),
        "checkpoint_written": bool(result.checkpoint and Path(result.checkpoint).exists()),
    }
    if device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
