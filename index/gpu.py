"""Move indexes to and from FAISS GPUs when there are any, and fall back to the CPU when not.

``faiss-cpu`` and ``faiss-gpu`` import under the same name; the CPU build has
``get_num_gpus`` (returning 0) but none of the GPU classes, so everything here
checks before it reaches for them. Several GPUs *shard* the index (each holds
1/N of the vectors, queries go to all) rather than replicate it: the reason
to have several is usually that the index does not fit on one.

HNSW has no GPU implementation; cloning one raises and ``maybe_gpu`` keeps it
on the CPU. Search parameters are set with ``tune.set_search_param``, which
uses ``GpuParameterSpace`` when present.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import faiss

logger = logging.getLogger(__name__)


def gpu_available() -> int:
    """How many GPUs FAISS can use: 0 on a CPU build, on a machine without one, or on any error."""
    get = getattr(faiss, "get_num_gpus", None)
    if get is None:
        return 0
    try:
        return max(0, int(get()))
    except Exception:  # noqa: BLE001 - a broken CUDA install reads as "no GPU"
        return 0


def to_gpu(index: faiss.Index, ngpu: int | None = None) -> faiss.Index:
    """A copy of ``index`` on ``ngpu`` GPUs (default: all), sharded when there are several."""
    n = gpu_available() if ngpu is None else ngpu
    if n < 1 or not hasattr(faiss, "GpuMultipleClonerOptions"):
        raise RuntimeError("no FAISS GPU build or no GPU")
    options = faiss.GpuMultipleClonerOptions()
    options.shard = n > 1
    return faiss.index_cpu_to_all_gpus(index, co=options, ngpu=n)


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of ``index`` (for saving): GPU parts and shards become one CPU index.

    On a CPU build there can be no GPU index, so ``index`` comes back as it is.
    """
    if hasattr(faiss, "index_gpu_to_cpu"):
        return faiss.index_gpu_to_cpu(index)
    return index


def maybe_gpu(index: faiss.Index, log: Callable[[str], object] = logger.info) -> faiss.Index:
    """``index`` on every GPU when that works, else ``index`` itself; says which through ``log``."""
    n = gpu_available()
    if n < 1 or not hasattr(faiss, "GpuMultipleClonerOptions"):
        log("no FAISS GPU build or no GPU: using the CPU")
        return index
    try:
        moved = to_gpu(index, n)
    except Exception as exc:  # noqa: BLE001 - out of GPU memory, HNSW, a driver error: all mean CPU
        log(f"could not move the index to {n} GPU(s) ({exc}): using the CPU")
        return index
    log(f"using {n} GPU{'s' if n > 1 else ''}" + (" (index sharded)" if n > 1 else ""))
    return moved
