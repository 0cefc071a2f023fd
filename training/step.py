"""One optimisation step of fine-tuning: the cross-modal loss (with any extra negatives, through gradient
caching and across ranks), the self-supervised terms, clipping and the optimiser update."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from crossmodal_kernel.encoder import trim_padding
from training.assembly import TrainParts
from training.distributed import average_gradients, distributed_clip_loss, gather_features
from training.gradcache import gradcache_backward
from training.locking import set_train_mode
from training.losses.siblings import sibling_mask

Batch = tuple[list[torch.Tensor], torch.Tensor | None, list]  # (views, tokens | None, texts)


def train_step(parts: TrainParts, batch: Batch, step: int) -> dict[str, float]:
    """Train on one (rank's slice of a) global batch; ``step`` counts the steps done after this one.

    Returns the step's loss terms (``*_loss`` summed as ``loss``) and the learning rate it used.
    """
    cfg, model, device = parts.cfg, parts.model, parts.device
    set_train_mode(model, cfg)
    views = [v.to(device, non_blocking=True) for v in batch[0]]
    tokens = batch[1].to(device, non_blocking=True) if batch[1] is not None else None
    parts.optimizer.zero_grad(set_to_none=True)
    terms: dict[str, torch.Tensor] = {}
    if tokens is not None:
        keys = getattr(batch, "keys", None)
        terms.update(_contrastive_backward(parts, views[0], tokens, batch[2], keys))
    if parts.ssl is not None:
        with parts.autocast():
            ssl_terms = parts.ssl(model.visual, views[0], views[1])
        parts.scaler.scale(sum(ssl_terms.values())).backward()
        terms.update({k: v.detach() for k, v in ssl_terms.items()})
    loss = sum(v for k, v in terms.items() if k.endswith("_loss"))
    params = parts.params
    if parts.dist.world_size > 1:
        average_gradients(params, parts.dist.world_size)
    if cfg.optim.grad_clip:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
    lr = parts.optimizer.param_groups[0]["lr"]  # the rate this step used
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    if parts.ssl is not None:
        parts.ssl.after_step(model.visual, step, cfg.optim.steps)
    if tokens is not None:
        parts.hard.after_step(model, views[0], tokens, parts.dist)
    return {"loss": float(loss), **{k: float(v) for k, v in terms.items()}, "lr": lr}


def _contrastive_backward(
    parts: TrainParts, images: torch.Tensor, tokens: torch.Tensor, texts: list, keys: torch.Tensor | None = None
) -> dict:
    """The cross-modal loss and its backward pass, with perturbed captions as extra text negatives and
    same-concept rows (``keys``, :class:`training.trainer.Batch`) out of each other's negatives."""
    model = parts.model
    perturbed = parts.hard.perturbed(texts)
    all_tokens = tokens
    if perturbed:
        extra = trim_padding(model, parts.loaded.tokenizer(perturbed)).to(parts.device)
        width = max(tokens.shape[1], extra.shape[1])
        all_tokens = torch.cat([F.pad(tokens, (0, width - tokens.shape[1])), F.pad(extra, (0, width - extra.shape[1]))])
    return gradcache_backward(
        functools.partial(model.encode_image, normalize=True),
        functools.partial(model.encode_text, normalize=True),
        images,
        all_tokens,
        functools.partial(_contrastive_loss, parts, n_texts=len(tokens), keys=keys),
        chunk_size=parts.cfg.optim.chunk_size or max(len(images), len(all_tokens)),
        loss_kwargs={**parts.temperature(), **parts.hard.queue_kwargs()},
        autocast=parts.autocast,
        scaler=parts.scaler if parts.use_amp else None,
    )


def _contrastive_loss(
    parts: TrainParts, img: torch.Tensor, txt_all: torch.Tensor, n_texts: int, keys: torch.Tensor | None = None,
    **kwargs,
) -> dict:  # fmt: skip
    """The cross-modal loss on the (gathered) global batch, with any extra negatives.

    Siblings are masked on the global batch; the local-loss path (each rank scores its own rows)
    has no mask and trains with siblings as negatives.
    """
    cfg, world, rank = parts.cfg, parts.dist.world_size, parts.dist.rank
    txt, extra = txt_all[:n_texts], txt_all[n_texts:]
    if world > 1 and cfg.distributed.local_loss:
        return distributed_clip_loss(img, txt, kwargs["logit_scale"], local_loss=True, rank=rank, world_size=world)
    if world > 1:
        with_grad = cfg.distributed.gather_with_grad
        img, txt = gather_features(img, txt, gather_with_grad=with_grad, rank=rank, world_size=world)
        keys = _gather_keys(keys, img.device, world) if keys is not None else None
    if len(extra):
        queued = kwargs.pop("extra_text_features", None)
        kwargs["extra_text_features"] = extra if queued is None else torch.cat([extra, queued])
    if keys is not None and cfg.loss.siblings == "mask" and len(keys) == len(img):
        kwargs["siblings"] = sibling_mask(*keys.to(img.device).T)
    return parts.loss_fn(img, txt, **kwargs, **parts.hard.mochi(img, txt))


def _gather_keys(keys: torch.Tensor, device: torch.device, world: int) -> torch.Tensor:
    """Every rank's sibling keys, in rank order (as :func:`gather_features` orders the features)."""
    target = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")  # NCCL gathers CUDA
    local = keys.to(target).contiguous()
    gathered = [torch.empty_like(local) for _ in range(world)]
    torch.distributed.all_gather(gathered, local)
    return torch.cat(gathered)
