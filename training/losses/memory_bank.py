"""A FIFO queue of past features, used as extra negatives (MoCo's dictionary)."""

from __future__ import annotations

import torch
from torch import nn

from training.losses._checks import check_positive_int

MAX_QUEUE_SIZE = 65_536  # MoCo's K; larger queues only grow staler under EMA drift


class FeatureQueue(nn.Module):
    """A ring buffer of the last ``size`` feature rows, oldest overwritten first.

    He et al., "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020, Sec. 3.2 ("dictionary as a queue").

    The rows are stored detached (they are negatives, never trained through).
    The storage, write position and fill count are buffers, so the queue follows
    ``.to(device)`` and is saved and restored with the state dict: a resumed run
    keeps its negatives.

    Args:
        size: capacity in rows, 1..65,536. MoCo: 65,536.
        dim: feature dimension. MoCo: 128.
        dtype: storage dtype; enqueued rows are cast to it.
    """

    # Buffers (registered in __init__), declared so they type as tensors, not Tensor | Module.
    queue: torch.Tensor
    ptr: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int = MAX_QUEUE_SIZE, dim: int = 128, dtype: torch.dtype = torch.float32):
        super().__init__()
        check_positive_int("size", size, maximum=MAX_QUEUE_SIZE)
        check_positive_int("dim", dim)
        self.size, self.dim = size, dim
        self.register_buffer("queue", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.filled)

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor) -> None:
        """Append (B, dim) rows, wrapping around; if B > size only the newest ``size`` stay."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (batch, {self.dim}), got {tuple(features.shape)}")
        b = features.shape[0]
        if b == 0:
            return
        ptr = int(self.ptr)
        # Row r of the batch lands in slot (ptr + r) % size; rows that a later
        # row of the same batch would overwrite are skipped.
        first = max(0, b - self.size)
        slots = (ptr + torch.arange(first, b, device=self.queue.device)) % self.size
        self.queue.index_copy_(0, slots, features[first:].detach().to(self.queue))
        self.ptr.fill_((ptr + b) % self.size)
        self.filled.fill_(min(int(self.filled) + b, self.size))

    def features(self) -> torch.Tensor:
        """The stored rows, oldest first, as a (len(self), dim) copy.

        A copy, not a view: a loss enqueues right after computing its logits,
        and an in-place write into a tensor autograd saved would break backward.
        """
        filled, ptr = int(self.filled), int(self.ptr)
        if filled < self.size:
            return self.queue[:filled].clone()
        return torch.cat([self.queue[ptr:], self.queue[:ptr]])

    def reset(self) -> None:
        """Forget every row (the storage is kept)."""
        self.queue.zero_()
        self.ptr.zero_()
        self.filled.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
