"""Fine-tuning: ``finetune(config, progress, cancel)`` — a plain function that jobs and the CLI call.

Step-based loop with AdamW, linear warmup then cosine decay, gradient clipping,
mixed precision on CUDA, LiT-style tower locking, checkpoints that resume
exactly (model, optimizer, scheduler, scaler, step, data position and RNG),
early stopping on validation recall, and WiSE-FT interpolation at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from training.config import TrainConfig
from training.data import open_image, worker_context
from training.encoder import Encoder, trim_padding
from training.models import LoadedModel, load_model, save_checkpoint
from training.pairs import EpochSampler, Pair, PairDataset, load_pairs, train_transform
from training.sources import SourceReport
from training.ssl import ImageSSL

log = logging.getLogger(__name__)

Progress = Callable[[dict], None]


@dataclass
class TrainResult:
    steps: int
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    best_val_r1: float | None = None
    stopped_early: bool = False
    cancelled: bool = False
    skipped_rows: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _collate(tokenizer, model, with_text: bool):
    """``(views, tokens | None)``: one (N, 3, H, W) tensor per augmented view."""

    def collate(batch):
        batch = [b for b in batch if b is not None]
        if not batch:
            return None
        views = [torch.stack([b[0][v] for b in batch]) for v in range(len(batch[0][0]))]
        tokens = trim_padding(model, tokenizer([b[1] for b in batch])) if with_text else None
        return views, tokens

    return collate


def apply_locks(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Lock towers through open_clip's own API; projection heads stay trainable."""
    if cfg.lock.image_unlocked_groups is not None:
        model.lock_image_tower(unlocked_groups=cfg.lock.image_unlocked_groups, freeze_bn_stats=cfg.lock.freeze_bn_stats)
    if cfg.lock.text_unlocked_layers is not None:
        model.lock_text_tower(unlocked_layers=cfg.lock.text_unlocked_layers)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on gains, biases and scalars (the logit scale), as in CLIP training.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_" in name else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("every parameter is locked: unlock something (see `lock` in the config)")
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.optim.lr,
    )


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_loss(cfg: TrainConfig, model: torch.nn.Module) -> tuple[torch.nn.Module, Callable[[], dict]]:
    """The loss module and a function giving the temperature terms it should use this step.

    A model that carries its own logit scale (and, for SigLIP, bias) keeps training
    it; a model without a SigLIP bias gets the loss's own, initialised for the batch size.
    """
    from training.losses import ClipLoss, SigLipLoss

    scale = getattr(model, "logit_scale", None)
    bias = getattr(model, "logit_bias", None)
    if cfg.loss.kind == "siglip":
        if scale is not None and bias is not None:
            return SigLipLoss(learnable=False), lambda: {"logit_scale": scale.exp(), "logit_bias": bias}
        return SigLipLoss.for_batch_size(cfg.optim.batch_size), dict
    if scale is not None:
        return ClipLoss(learnable=False), lambda: {"logit_scale": scale.exp()}
    return ClipLoss(), dict


def _rng_state() -> dict:
    return {
        "torch": torch.random.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def evaluate_recall(loaded: LoadedModel, pairs: list[Pair], batch_size: int = 64) -> dict:
    """Text->image and image->text R@1/R@5 on ``pairs``, duplicate-caption aware."""
    from training.bootstrap import recall_at_k

    encoder = Encoder(loaded, batch_size=batch_size)
    img = np.concatenate(
        [
            encoder.encode_images([open_image(p.image) for p in pairs[i : i + batch_size]])
            for i in range(0, len(pairs), batch_size)
        ]
    )
    captions = [p.text for p in pairs]
    txt = encoder.encode_texts(captions)
    return {
        "t2i_R@1": recall_at_k(img, txt, captions, 1),
        "t2i_R@5": recall_at_k(img, txt, captions, 5),
        "i2t_R@1": recall_at_k(txt, img, captions, 1),
    }


def _wise_ft(model: torch.nn.Module, base: dict[str, torch.Tensor], alpha: float) -> None:
    """WiSE-FT (Wortsman et al., 2022): interpolate every float weight between base and fine-tuned."""
    if alpha >= 1.0:
        return
    state = model.state_dict()
    for name, value in state.items():
        if value.is_floating_point() and name in base:
            value.copy_((1 - alpha) * base[name].to(value.device) + alpha * value)


def finetune(
    cfg: TrainConfig,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.data``; resumes from ``output_dir`` when a checkpoint is there."""
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir)
    state_path = out / "checkpoints" / "last.pt"
    report = SourceReport()
    image_only = cfg.ssl.image_only
    train_pairs, val_pairs = load_pairs(
        cfg.data.manifest, cfg.data.val_fraction, cfg.data.split_column, report, images_only=image_only
    )
    if image_only:
        val_pairs = []  # no captions to measure retrieval with
    if len(train_pairs) < cfg.optim.batch_size:
        raise ValueError(f"{len(train_pairs)} training pairs is fewer than one batch of {cfg.optim.batch_size}")
    loaded = load_model(cfg.model, cfg.device)
    model, device = loaded.model, loaded.device
    base_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    apply_locks(model, cfg)
    loss_fn, temperature = make_loss(cfg, model)
    loss_fn.to(device)
    ssl = ImageSSL(cfg.ssl, loaded.embed_dim, model.visual).to(device) if cfg.ssl.kind else None
    optimizer = make_optimizer(model, cfg)
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        optimizer.add_param_group({"params": loss_params, "weight_decay": 0.0})
    if ssl is not None:
        optimizer.add_param_group({"params": ssl.trainable_parameters(), "weight_decay": cfg.optim.weight_decay})
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.optim.warmup_steps, cfg.optim.steps))
    use_amp = cfg.optim.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    pp = model.visual.preprocess_cfg
    dataset = PairDataset(
        train_pairs,
        train_transform(cfg.augment, loaded.image_size, pp["mean"], pp["std"]),
        cfg.seed,
        views=2 if ssl is not None else 1,
    )
    result = TrainResult(steps=0, checkpoint=None, skipped_rows=dict(report.skipped))
    step, epoch, position, best, stale = 0, 0, 0, -1.0, 0
    if state_path.exists():
        ckpt = torch.load(state_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != json.loads(cfg.model_dump_json()):
            raise ValueError(f"{state_path} was written by another configuration; use a new output_dir")
        model.load_state_dict(ckpt["model"])
        loss_fn.load_state_dict(ckpt["loss"])
        if ssl is not None:
            ssl.load_state_dict(ckpt["ssl"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        step, epoch, position = ckpt["step"], ckpt["epoch"], ckpt["position"]
        best, stale = ckpt["best"], ckpt["stale"]
        result.history, result.evals = ckpt["history"], ckpt["evals"]
        _set_rng_state(ckpt["rng"])
        log.info("resumed from %s at step %d", state_path, step)

    def save_state() -> None:
        _save_atomic(
            {
                "config": json.loads(cfg.model_dump_json()),
                "model": model.state_dict(),
                "loss": loss_fn.state_dict(),
                "ssl": ssl.state_dict() if ssl is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "epoch": epoch,
                "position": position,
                "best": best,
                "stale": stale,
                "history": result.history,
                "evals": result.evals,
                "rng": _rng_state(),
            },
            state_path,
        )

    t_start, samples = time.perf_counter(), 0
    bs = cfg.optim.batch_size
    done = step >= cfg.optim.steps
    while not done:
        dataset.epoch = epoch
        loader = DataLoader(
            dataset,
            batch_size=bs,
            sampler=EpochSampler(len(dataset), cfg.seed, epoch, start=position),
            num_workers=cfg.data.num_workers,
            collate_fn=_collate(loaded.tokenizer, model, with_text=not image_only),
            drop_last=True,
            multiprocessing_context=worker_context(cfg.data.num_workers),
        )
        for batch in loader:
            position += bs
            if batch is None or len(batch[0][0]) < 2:
                continue
            model.train()
            views = [v.to(device, non_blocking=True) for v in batch[0]]
            with torch.autocast(device_type=device.type, enabled=use_amp):
                terms = {}
                if not image_only:
                    img = model.encode_image(views[0], normalize=True)
                    txt = model.encode_text(batch[1].to(device, non_blocking=True), normalize=True)
                    terms.update(loss_fn(img, txt, **temperature()))
                if ssl is not None:
                    terms.update(ssl(model.visual, views[0], views[1]))
                loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(
                    [p for g in optimizer.param_groups for p in g["params"]], cfg.optim.grad_clip
                )
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if ssl is not None:
                ssl.after_step(model.visual, step, cfg.optim.steps)
            samples += len(views[0])
            elapsed = time.perf_counter() - t_start
            rate = samples / elapsed if elapsed > 0 else 0.0
            entry = {
                "step": step,
                "loss": float(loss.detach()),
                **{k: float(v.detach()) for k, v in terms.items()},
                "lr": lr,
                "samples_per_s": rate,
                "eta_s": (cfg.optim.steps - step) * bs / rate if rate else None,
            }
            result.history.append(entry)
            if progress:
                progress({"total": cfg.optim.steps, **entry})
            if val_pairs and (step % cfg.eval_every == 0 or step == cfg.optim.steps):
                model.eval()
                metrics = {"step": step, **evaluate_recall(loaded, val_pairs)}
                result.evals.append(metrics)
                if metrics["t2i_R@1"] > best:
                    best, stale = metrics["t2i_R@1"], 0
                else:
                    stale += 1
                if cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
                    result.stopped_early = done = True
            if step % cfg.checkpoint_every == 0:
                save_state()
            if step >= cfg.optim.steps:
                done = True
            if cancel and cancel():
                save_state()
                result.cancelled = done = True
            if done:
                break
        else:
            epoch, position = epoch + 1, 0

    result.steps, result.best_val_r1 = step, (best if best >= 0 else None)
    if result.cancelled:
        return result
    _wise_ft(model, base_state, cfg.wise_ft_alpha)
    model.eval()
    result.checkpoint = save_checkpoint(loaded, out / "final.pt", train_result={"steps": step})
    (out / "result.json").write_text(
        json.dumps({**asdict(result), "checkpoint": str(result.checkpoint)}, indent=2, default=str)
    )
    return result
