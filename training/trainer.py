"""Fine-tuning: ``finetune(config, progress, cancel)`` — a plain function that jobs and the CLI call.

Step-based loop with AdamW, linear warmup then cosine decay, gradient clipping,
mixed precision on CUDA, LiT-style tower locking, gradient caching (the loss
sees the whole batch while towers see chunks), hard negatives (in-batch
weighting, a momentum-encoded queue, MoCHi mixing, NegCLIP caption
perturbations, ANN-mined batches), self-supervised image auxiliaries,
torchrun data parallelism with features gathered across ranks, checkpoints
that resume exactly (model, optimizer, scheduler, scaler, step, data position,
queues and RNG), early stopping on validation recall, and WiSE-FT at the end.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

from crossmodal_kernel import atomic
from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.distributed import init_distributed
from crossmodal_kernel.encoder import trim_padding
from crossmodal_kernel.images import loader_workers, worker_context
from training import resume
from training.assembly import TrainParts, build_parts
from training.config import TrainConfig
from training.negatives.provider import mined_batches
from training.pairs import EpochSampler, caption_id, sibling_groups
from training.resume import TrainState
from training.step import train_step
from training.validation import evaluate_recall

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
    noisy_pairs: dict | None = None
    resumed_from_step: int | None = None  # the checkpoint's step when the run continued one


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def finetune(
    cfg: TrainConfig,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Fine-tune ``cfg.model`` on ``cfg.data``; resumes from ``output_dir`` when a checkpoint is there.

    Under torchrun every rank runs this; rank 0 evaluates, reports and writes files.
    """
    dist = init_distributed()
    seed_everything(cfg.seed)
    parts = build_parts(cfg, dist)
    state = resume.load(parts)
    result = TrainResult(steps=0, checkpoint=None, skipped_rows=parts.skipped_rows, noisy_pairs=parts.noisy_pairs)
    result.resumed_from_step = state.step if resume.state_path(cfg).exists() else None
    t_start, samples = time.perf_counter(), 0
    done = state.step >= cfg.optim.steps
    while not done:
        for batch in _epoch_batches(parts, state):
            state.position += 1
            if batch is None or len(batch[0][0]) < 2:
                continue
            entry = {"step": state.step + 1, **train_step(parts, batch, state.step + 1)}
            state.step += 1
            samples += len(batch[0][0]) * dist.world_size
            entry.update(_throughput(cfg, state.step, samples, time.perf_counter() - t_start))
            state.history.append(entry)
            stop = _maybe_evaluate(parts, state)
            if progress and dist.is_main:  # after validation, so that a step's report carries its metrics
                val = state.evals[-1] if state.evals and state.evals[-1]["step"] == state.step else None
                progress({"total": cfg.optim.steps, **entry, **({"val": val} if val else {})})
            if state.step % cfg.checkpoint_every == 0:
                resume.save(parts, state)
            if _cancel_requested(cancel, parts):
                resume.save(parts, state)
                result.cancelled = True
            if stop or result.cancelled or state.step >= cfg.optim.steps:
                result.stopped_early = stop
                done = True
                break
        else:
            state.epoch, state.position = state.epoch + 1, 0
    result.steps, result.history, result.evals = state.step, state.history, state.evals
    result.best_val_r1 = state.best if state.best >= 0 else None
    if not result.cancelled:
        _finalise(parts, result)
    return result


def _cancel_requested(cancel: Callable[[], bool] | None, parts: TrainParts) -> bool:
    """Rank 0 asks ``cancel``; under torchrun it tells every rank, so that all stop at the same step."""
    flag = bool(cancel()) if cancel is not None and parts.dist.is_main else False
    if parts.dist.world_size > 1:
        decision = torch.tensor([int(flag)], device=parts.device if parts.dist.backend == "nccl" else "cpu")
        torch.distributed.broadcast(decision, src=0)
        flag = bool(decision.item())
    return flag


def _epoch_batches(parts: TrainParts, state: TrainState) -> Iterable:
    """This rank's batches of the rest of ``state.epoch``, from ``state.position`` on."""
    cfg, bs = parts.cfg, parts.cfg.optim.batch_size
    parts.dataset.epoch = state.epoch
    if cfg.hard_negatives.ann_mining:
        global_batches = mined_batches(parts.loaded, parts.train_pairs, cfg, state.epoch, start=state.position)
    else:
        sampler = EpochSampler(len(parts.dataset), cfg.seed, state.epoch, start=state.position * bs)
        global_batches = BatchSampler(sampler, bs, drop_last=True)
    return DataLoader(
        _Indexed(parts.dataset),
        batch_sampler=_RankBatches(global_batches, parts.dist.rank, parts.dist.world_size),
        num_workers=(workers := loader_workers(cfg.data.num_workers)),
        collate_fn=_collate(
            parts.loaded.tokenizer,
            parts.model,
            with_text=not cfg.ssl.image_only,
            groups=sibling_groups(parts.train_pairs),
        ),
        multiprocessing_context=worker_context(workers),
        # Its own generator, so that making the iterator (which draws the workers' base seed) leaves
        # the global RNG alone: from it, the draw would come at the epoch's start in an uninterrupted
        # run but right after the restored RNG state in a resumed one, and shift every later draw
        # (lit-mini's attention dropout): issue 16.
        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + state.epoch),
    )


def _throughput(cfg: TrainConfig, step: int, samples: int, elapsed: float) -> dict:
    rate = samples / elapsed if elapsed > 0 else 0.0
    eta = (cfg.optim.steps - step) * cfg.optim.batch_size / rate if rate else None
    return {"samples_per_s": rate, "eta_s": eta}


def _maybe_evaluate(parts: TrainParts, state: TrainState) -> bool:
    """Validate every ``eval_every`` steps and at the end; True when early stopping says stop."""
    cfg = parts.cfg
    if not parts.val_pairs or not (state.step % cfg.eval_every == 0 or state.step == cfg.optim.steps):
        return False
    parts.model.eval()
    metrics = {"step": state.step, **evaluate_recall(parts.loaded, parts.val_pairs)}
    state.evals.append(metrics)
    if metrics["t2i_R@1"] > state.best:
        state.best, state.stale = metrics["t2i_R@1"], 0
    else:
        state.stale += 1
    return bool(cfg.early_stopping_patience and state.stale >= cfg.early_stopping_patience)


def _finalise(parts: TrainParts, result: TrainResult) -> None:
    """WiSE-FT towards the starting weights, then ``final.pt`` and ``result.json`` (rank 0)."""
    _wise_ft(parts.model, parts.base_state, parts.cfg.wise_ft_alpha)
    parts.model.eval()
    if parts.dist.is_main:
        out = Path(parts.cfg.output_dir)
        result.checkpoint = save_checkpoint(parts.loaded, out / "final.pt", train_result={"steps": result.steps})
        summary = {**asdict(result), "checkpoint": str(result.checkpoint)}
        atomic.write_text(out / "result.json", json.dumps(summary, indent=2, default=str))


def _wise_ft(model: torch.nn.Module, base: dict[str, torch.Tensor], alpha: float) -> None:
    """WiSE-FT (Wortsman et al., 2022): interpolate every float weight between base and fine-tuned."""
    if alpha >= 1.0:
        return
    state = model.state_dict()
    for name, value in state.items():
        if value.is_floating_point() and name in base:
            value.copy_((1 - alpha) * base[name].to(value.device) + alpha * value)


class _RankBatches(torch.utils.data.Sampler[list[int]]):
    """Rank r's slice ``batch[r::W]`` of every global batch: the ranks together see the global batch."""

    def __init__(self, batches, rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self):
        for batch in self.batches:
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.batches)


class _Indexed(torch.utils.data.Dataset):
    """``(i, dataset[i])``: the collate needs each row's index to look up its sibling keys."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


class Batch(tuple):
    """``(views, tokens | None, texts)``, with ``keys``: (N, 3) long sibling keys of its rows (group id,
    text id, drawn caption id; -1 for none), from which the step builds the siblings mask."""

    keys: torch.Tensor | None = None


def _collate(tokenizer, model, with_text: bool, groups: list[tuple[int, int]] | None = None):
    """A :class:`Batch`: one (N, 3, H, W) tensor per augmented view, the tokens, the captions and the keys."""

    def collate(batch):
        batch = [(i, b) for i, b in batch if b is not None]
        if not batch:
            return None
        views = [torch.stack([b[0][v] for _, b in batch]) for v in range(len(batch[0][1][0]))]
        texts = [b[1] for _, b in batch]
        tokens = trim_padding(model, tokenizer(texts)) if with_text else None
        out = Batch((views, tokens, texts))
        if groups is not None:
            out.keys = torch.tensor([[*groups[i], caption_id(t)] for (i, _), t in zip(batch, texts, strict=True)])
        return out

    return collate
