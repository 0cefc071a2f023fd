"""Joining the process group torchrun describes, or running as one process.

Batch embedding and fine-tuning both run under ``torchrun --nproc-per-node N``; this is the
part they share. What training does across ranks (gathering features, the global loss,
averaging gradients) is in ``training.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: a single process, no process group

    @property
    def is_main(self) -> bool:
        """The one process that logs, evaluates and writes checkpoints."""
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment, or run as one process.

    torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without
    them this is a single process: no process group, rank 0 of 1. The backend is NCCL
    when CUDA is available (one GPU per process, ``cuda:LOCAL_RANK``), else gloo on the
    CPU; ``backend`` overrides it. Calling it again returns the existing group's info.
    """
    if dist.is_initialized():
        backend = str(dist.get_backend())
    elif "RANK" not in os.environ:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return DistInfo(rank=0, world_size=1, local_rank=0, device=device, backend=None)
    else:
        missing = [v for v in TORCHRUN_VARS if v not in os.environ]
        if missing:
            raise RuntimeError(f"RANK is set but {', '.join(missing)} are not: launch with torchrun")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """Rank r's share of n items: r, r + W, r + 2W, ... (sizes differ by at most one)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return range(rank, n, world_size)
