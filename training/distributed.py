"""Data-parallel training helpers: process setup, feature gathering, the global contrastive loss.

A contrastive loss gets its negatives from the batch, so data parallelism must
not shrink the batch the loss sees: every rank gathers all ranks' features and
the loss is computed over the *global* batch (Radford et al. 2021, CLIP, Sec.
2.5: "the calculation of embedding similarities was also sharded with
individual GPUs computing only the subset of the pairwise similarities
necessary for their local batch of embeddings"; open_clip's ``gather_features``
and ``local_loss``).

Gradient convention (checked against a single process in
``tests/training/test_distributed.py``): DistributedDataParallel *averages*
gradients over the W ranks, so :func:`distributed_clip_loss` returns on each
rank a loss whose gradients, averaged over ranks, are the gradients of the
single-process loss L on the global batch of W * N pairs:

* global loss (``local_loss=False``): every rank computes L itself. Gathering
  with grad sends every rank's d L / d f_r back to rank r (a sum, W copies), so
  rank r's tower gradient is W times its share and DDP's 1/W cancels it.
  ``logit_scale`` gets d L / d s on every rank; the average is d L / d s.
* local loss (``local_loss=True``): rank r computes only its N rows, L_r, and
  L = mean_r L_r. Rank r's features are columns in every L_r', whose gradients
  the gathered backward sums onto rank r; DDP's average turns sum_r' into the
  mean_r' that L is made of. Each rank reports its own L_r: average them to log L.
* global loss without grad through the gather: only rank r's own copy of f_r
  carries a gradient, which is exact, d L / d f_r, but DDP would divide it by W;
  the local features' gradient is multiplied by W to undo that.

The combination ``local_loss=True, gather_with_grad=False`` (open_clip allows
it) loses the gradient of every column term computed on another rank, so it is
refused rather than silently training on a different objective.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _AllGather(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the sum, over ranks, of the
    gradients of its rows.

    Written here rather than taken from ``torch.distributed.nn.functional.all_gather``,
    which torch 2.14 deprecates in favour of private functional collectives. Only
    collectives that every backend and every supported torch version has are used:
    list all-gather, and all-reduce then slice for the backward. The all-reduce moves
    twice the bytes a reduce-scatter would, on a (W N, D) feature matrix: negligible
    next to the towers.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = torch.clone(grad, memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()].clone()


def gather_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    gather_with_grad: bool = True,
    rank: int,
    world_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' features, concatenated in rank order: (W * N, D) each.

    Every rank must pass the same N (drop the last, short batch). With
    ``gather_with_grad`` the gradient of every rank's copy flows back to the rank
    that owns the rows. Without it the gather is a constant, except that this
    rank's slice is the local tensor itself, so gradients through it still flow.
    With one process the inputs are returned as they are.
    """
    if world_size == 1:
        return image_features, text_features
    if gather_with_grad:
        return _AllGather.apply(image_features), _AllGather.apply(text_features)
    gathered = []
    for local in (image_features, text_features):
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.detach().contiguous())
        parts[rank] = local
        gathered.append(torch.cat(parts))
    return gathered[0], gathered[1]


def distributed_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    local_loss: bool = False,
    gather_with_grad: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    max_logit_scale: float | None = 100.0,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """CLIP's symmetric InfoNCE (as :class:`training.losses.ClipLoss`) over the global batch.

    Args:
        image_features: this rank's (N, D) image features; row i pairs with text row i.
        text_features: this rank's (N, D) text features.
        logit_scale: the exponentiated scale s, clipped at ``max_logit_scale``.
        local_loss: compute only this rank's N rows of each direction against all
            W * N columns (labels offset by rank * N): O(N * W N) logits instead of
            O((W N)^2), the same averaged gradient (see the module docstring).
        gather_with_grad: gather through an autograd collective (required with local_loss).
        rank, world_size: default to the current process group's (0 and 1 without one).
        normalize: L2-normalise the features first.

    Returns:
        ``{"contrastive_loss": scalar}``: L on every rank, or L_r with local_loss.
    """
    grouped = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if grouped else 0
    if world_size is None:
        world_size = dist.get_world_size() if grouped else 1
    if local_loss and not gather_with_grad and world_size > 1:
        raise ValueError(
            "local_loss=True needs gather_with_grad=True: without it the gradients of this rank's "
            "features as columns of the other ranks' logits are lost"
        )
    if normalize:
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
    if not gather_with_grad and world_size > 1:
        # Only this rank's copy carries d L / d f, exactly; DDP's average would divide it by W.
        image_features = _scale_grad(image_features, world_size)
        text_features = _scale_grad(text_features, world_size)
    all_images, all_texts = gather_features(
        image_features, text_features, gather_with_grad=gather_with_grad, rank=rank, world_size=world_size
    )
    s = torch.as_tensor(logit_scale)
    if max_logit_scale is not None:
        s = s.clamp(max=max_logit_scale)
    n = image_features.shape[0]
    if local_loss:
        logits_per_image = s * image_features @ all_texts.T  # (N, W N)
        logits_per_text = s * text_features @ all_images.T
        labels = torch.arange(n, device=image_features.device) + rank * n
    else:
        logits_per_image = s * all_images @ all_texts.T  # (W N, W N)
        logits_per_text = logits_per_image.T
        labels = torch.arange(all_images.shape[0], device=image_features.device)
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    return {"contrastive_loss": loss}


def _scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x unchanged in value (exactly: it adds a zero), with its gradient multiplied by ``factor``."""
    return x.detach() + (x - x.detach()) * factor


def average_gradients(parameters: Iterable[torch.nn.Parameter], world_size: int | None = None) -> None:
    """Average ``.grad`` over ranks, as DDP does, in one collective.

    For loops that cannot go through DDP's forward, e.g. gradient caching
    (:mod:`training.gradcache`), which runs each tower many times per step. Every
    rank must pass the same parameters in the same order; one without a gradient
    on this rank counts as zeros.
    """
    world_size = world_size or (dist.get_world_size() if dist.is_initialized() else 1)
    params = [p for p in parameters if p.requires_grad]
    if world_size == 1 or not params:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    for grad, g in zip(grads, flat.split([p.numel() for p in params]), strict=True):
        grad.copy_(g.view_as(grad))
