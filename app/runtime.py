"""Process-wide runtime defaults, applied before torch or faiss load their OpenMP runtime.

OpenMP worker threads spin for a while after each parallel region by default.
On a small machine shared with DataLoader workers, an HTTP stack and other
processes, the spinning threads steal the cores the rest of the request needs:
in `benchmarks/bench_search.py` on 2 cores, passive waiting cut end-to-end p99
search latency by about half. Users can still override it in the environment.
"""

from __future__ import annotations

import functools
import logging
import os

log = logging.getLogger(__name__)


def apply_runtime_defaults() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@functools.cache
def faiss_gpu() -> bool:
    """Whether FAISS can use a GPU in this process: probed once, then passed to everything that builds or
    loads an index (the CPU build of FAISS, or no GPU, is ``False``)."""
    from index.gpu import gpu_available

    n = gpu_available()
    log.info("FAISS sees %d GPU(s)", n)
    return n > 0
