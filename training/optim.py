"""The optimiser, its schedule, and the loss a configuration asks for."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from training.config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on gains, biases and scalars (the logit scale), as in CLIP training.
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_" in name else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("every parameter is locked: unlock something (see `lock` in the config)")
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.optim.lr,
        # One kernel over every tensor instead of a Python loop of small ops per parameter (on CPU,
        # torch's default is that loop: 40 ms a step for test:tiny's 3M parameters, a tenth of that fused).
        fused=True,
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
    Any hard-negative option selects the hard-negative InfoNCE, which with beta = tau+ = 0
    is exactly CLIP's loss and takes the extra negatives.
    """
    from training.losses import ClipLoss, HardNegativeClipLoss, SigLipLoss

    scale = getattr(model, "logit_scale", None)
    bias = getattr(model, "logit_bias", None)
    if cfg.loss.kind == "siglip":
        if scale is not None and bias is not None:
            return SigLipLoss(learnable=False), lambda: {"logit_scale": scale.exp(), "logit_bias": bias}
        return SigLipLoss.for_batch_size(cfg.optim.batch_size), dict
    hn = cfg.hard_negatives
    make = functools.partial(HardNegativeClipLoss, hn.beta, hn.tau_plus) if hn.enabled else ClipLoss
    if scale is not None:
        return make(learnable=False), lambda: {"logit_scale": scale.exp()}
    return make(), dict
