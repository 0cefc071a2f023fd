"""Gradient caching: a contrastive loss over a big batch with towers that only see small chunks.

Gao, Zhang, Han and Callan, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup", RepL4NLP 2021 (GradCache), Sec. 3 and Algorithm 1.

A contrastive loss couples every example of the batch, so plain gradient
accumulation over small batches changes the objective (fewer negatives per
example). But the loss couples examples only through their *features*, which
are small (B x D). GradCache splits the backward pass at the features:

    1. encode every chunk without a graph        -> all B features, no activations kept
    2. loss on the full batch, backward to the features (as leaves) -> d loss / d f, cached
    3. per chunk: encode again with a graph and backward ``d loss / d f_chunk``
       through it; the chunk's graph is freed before the next chunk.

By the chain rule the parameter gradients are those of one plain full-batch
backward, while tower activations are only ever alive for ``chunk_size``
examples: activation memory is O(chunk_size), plus O(B D) features and the
O(B^2) logits. The price is a second forward pass of every tower (about +1/3 of
the compute of forward + backward).

Exactness needs the two forward passes to produce the same features:

* Random layers (dropout, patch dropout) must draw the same numbers. Before each
  chunk's first pass the CPU and CUDA RNG states are saved and before its second
  pass they are restored, as the paper's ``RandContext`` does. The second pass
  runs inside ``torch.random.fork_rng``, so the global RNG stream afterwards is
  the one a single forward pass over the chunks would leave.
* The towers must treat examples independently. BatchNorm in training mode does
  not: its statistics would be per chunk, and its running statistics are
  updated in both passes. Freeze BatchNorm (eval mode / ``freeze_bn_stats``)
  when using chunks; transformers (LayerNorm) are fine.

Mixed precision: pass ``autocast`` (e.g. ``lambda: torch.autocast("cuda")``),
used around every forward pass and the loss but not around the backward passes,
and the ``GradScaler``. The scaler multiplies the loss once, by S, so the cached
feature gradients are already S * d loss / d f -- exactly what a plain scaled
backward would send into the towers, and what keeps those half-precision
gradients from underflowing. Step 3 passes them through unchanged, so the
parameter gradients come out scaled once, by S, and ``scaler.unscale_`` /
``scaler.step`` / ``scaler.update`` are used as in a plain step.

Under DistributedDataParallel, call the towers of the unwrapped module (DDP
expects one forward per backward) and average the gradients once afterwards
with :func:`training.distributed.average_gradients`; pass a gathering loss such
as :func:`training.distributed.distributed_clip_loss` as ``loss_fn``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch

Encode = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[..., dict[str, torch.Tensor]]


def gradcache_backward(
    encode_image: Encode,
    encode_text: Encode,
    images: torch.Tensor,
    tokens: torch.Tensor,
    loss_fn: LossFn,
    *,
    chunk_size: int,
    loss_kwargs: dict | None = None,
    autocast: Callable[[], AbstractContextManager] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, torch.Tensor]:
    """Accumulate into ``.grad`` the gradients of ``loss_fn`` over the whole batch, chunk by chunk.

    Args:
        encode_image: images (n, ...) -> features (n, D), e.g.
            ``functools.partial(model.encode_image, normalize=True)``.
        encode_text: tokens (m, L) -> features (m, D).
        images: the full batch of images, on the model's device.
        tokens: the full batch of tokens.
        loss_fn: ``loss_fn(image_features, text_features, **loss_kwargs)`` returning
            a dict whose ``*_loss`` terms are summed, like the losses in ``training.losses``.
        chunk_size: most examples a tower processes with autograd at a time. At or
            above the batch size this is one plain forward/backward.
        loss_kwargs: extra arguments for ``loss_fn``, e.g. ``{"logit_scale": model.logit_scale.exp()}``;
            tensors in it that require grad get their gradient from the loss backward.
        autocast: factory of the context to run forward passes and the loss in.
        scaler: a GradScaler; the loss is scaled by it once (see the module docstring).

    Returns:
        The loss terms, detached. Gradients are accumulated (not zeroed) into ``.grad``.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    autocast = autocast or contextlib.nullcontext
    loss_kwargs = loss_kwargs or {}

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    if chunk_size >= max(len(images), len(tokens)):
        with autocast():
            terms = loss_fn(encode_image(images), encode_text(tokens), **loss_kwargs)
            loss = _total(terms)
        backward(loss)
        return _detached(terms)

    towers = [(encode_image, images.split(chunk_size)), (encode_text, tokens.split(chunk_size))]
    devices = _cuda_devices(images, tokens)

    # 1. Features of the whole batch, no graph; remember each chunk's RNG state.
    rng_states: list[list[_RngState]] = []
    features = []
    with torch.no_grad():
        for encode, chunks in towers:
            rng_states.append([])
            outputs = []
            for chunk in chunks:
                rng_states[-1].append(_RngState.capture(devices))
                with autocast():
                    outputs.append(encode(chunk))
            features.append(torch.cat(outputs).requires_grad_())

    # 2. The loss on the full batch; backward stops at the features (leaves) and the loss kwargs.
    with autocast():
        terms = loss_fn(*features, **loss_kwargs)
        loss = _total(terms)
    backward(loss)

    # 3. Replay each chunk with a graph and push its cached feature gradient through it.
    for (encode, chunks), states, feats in zip(towers, rng_states, features, strict=True):
        if feats.grad is None:  # the loss does not use this tower's features: nothing to push back
            continue
        for chunk, state, grad in zip(chunks, states, feats.grad.split(chunk_size), strict=True):
            with _replayed(state, devices), autocast():
                out = encode(chunk)
            if not out.requires_grad:  # a locked tower: nothing to train, skip its replay
                break
            out.backward(grad.to(out.dtype))
    return _detached(terms)


def _total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    losses = [v for k, v in terms.items() if k.endswith("_loss")]
    if not losses:
        raise ValueError(f"loss_fn returned no '*_loss' term (keys: {sorted(terms)})")
    return sum(losses[1:], losses[0])


def _detached(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in terms.items()}


def _cuda_devices(*tensors: torch.Tensor) -> list[torch.device]:
    return sorted({t.device for t in tensors if t.device.type == "cuda"}, key=str)


class _RngState:
    """The CPU generator's state and that of each CUDA device in use (CPU-side ops such as
    open_clip's patch dropout draw from the CPU generator even when the model is on a GPU)."""

    def __init__(self, cpu: torch.Tensor, cuda: list[torch.Tensor]) -> None:
        self.cpu, self.cuda = cpu, cuda

    @classmethod
    def capture(cls, devices: list[torch.device]) -> _RngState:
        return cls(torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices])

    def restore(self, devices: list[torch.device]) -> None:
        torch.set_rng_state(self.cpu)
        for device, state in zip(devices, self.cuda, strict=True):
            torch.cuda.set_rng_state(state, device)


@contextlib.contextmanager
def _replayed(state: _RngState, devices: list[torch.device]) -> Iterator[None]:
    """Run with the RNG as it was for the first pass; leave the global stream untouched."""
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        state.restore(devices)
        yield
