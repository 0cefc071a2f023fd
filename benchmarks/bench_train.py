"""Trainer throughput against a minimal raw training loop on the same model, batch and threads.

The raw loop is the floor: batches already decoded and preprocessed in memory,
then forward, CLIP loss, backward and an AdamW step — nothing else. The
trainer adds everything it does for real: decoding images from disk in
DataLoader workers with seeded augmentation, tokenising, LR schedule, gradient
clipping and progress reports. Both run in this process, one after the other,
with the same locks (LiT: last image group unlocked, text tower locked).

    .venv/bin/python benchmarks/bench_train.py [--steps 20] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import record  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import open_image  # noqa: E402
from training.losses import ClipLoss  # noqa: E402
from training.models import load_model  # noqa: E402
from training.synthetic import generate_dataset  # noqa: E402
from training.trainer import apply_locks, finetune, make_optimizer  # noqa: E402


def raw_loop(cfg: TrainConfig, pairs: list[tuple[str, str]], steps: int, warmup: int) -> float:
    loaded = load_model(cfg.model, "cpu")
    model = loaded.model
    apply_locks(model, cfg)
    opt = make_optimizer(model, cfg)
    loss_fn = ClipLoss(learnable=False)
    bs = cfg.optim.batch_size
    images = torch.stack([loaded.preprocess(open_image(p)) for p, _ in pairs[: bs * 4]])
    tokens = loaded.tokenizer([t for _, t in pairs[: bs * 4]])
    model.train()
    t0 = None
    for step in range(steps + warmup):
        if step == warmup:
            t0 = time.perf_counter()
        i = (step % 4) * bs
        img = model.encode_image(images[i : i + bs], normalize=True)
        txt = model.encode_text(tokens[i : i + bs], normalize=True)
        loss = loss_fn(img, txt, logit_scale=model.logit_scale.exp())["contrastive_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * bs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:lit-mini")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    ds = generate_dataset(tmp / "ds", n=max(400, args.batch_size * 8), seed=0)
    cfg = TrainConfig.model_validate(
        {
            "model": args.model,
            "device": "cpu",
            "output_dir": str(tmp / "run"),
            "data": {"manifest": str(ds.manifest), "val_fraction": 0.0, "num_workers": args.workers},
            "lock": {"image_unlocked_groups": 1, "text_unlocked_layers": 0},
            "optim": {"steps": args.steps + args.warmup, "batch_size": args.batch_size, "warmup_steps": 1},
            "checkpoint_every": 10_000,
            "eval_every": 10_000,
        }
    )
    pairs = [(str(ds.root / r["image"]), r["text"]) for r in ds.rows()]
    raw = raw_loop(cfg, pairs, args.steps, args.warmup)

    stamps: list[float] = []
    finetune(cfg, progress=lambda e: stamps.append(time.perf_counter()))
    trainer = args.steps * args.batch_size / (stamps[-1] - stamps[args.warmup - 1])
    ratio = trainer / raw
    result = {
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "raw_samples_per_s": raw,
        "trainer_samples_per_s": trainer,
        "ratio": ratio,
        "goal_ratio": 0.9,
    }
    md = f"""## Trainer throughput (`benchmarks/bench_train.py`)

`{args.model}`, batch {args.batch_size}, last image group unlocked, text tower locked, CPU,
{torch.get_num_threads()} torch threads, {args.steps} timed steps after {args.warmup} warm-up. The raw loop
trains on batches already decoded in memory; the trainer decodes PNGs from disk in
{args.workers} DataLoader workers with augmentation.

| loop | samples/s |
|---|---|
| raw loop (forward, loss, backward, step on in-memory tensors) | {raw:.1f} |
| `training.trainer.finetune` | {trainer:.1f} |
| **ratio trainer / raw** | **{ratio:.2f}x** |

Goal ≥ 0.9x — {"met" if ratio >= 0.9 else "**not met**"}.
Reproduce: `.venv/bin/python benchmarks/bench_train.py --steps {args.steps} --batch-size {args.batch_size}`
"""
    print(md)
    if not args.no_record:
        record("train", result, md)


if __name__ == "__main__":
    main()
