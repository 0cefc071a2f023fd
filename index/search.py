"""Batched search with overfetch: room for tombstones and filters without a second round trip.

An index keeps deleted items (tombstones) until it is compacted, and callers may
filter results (by metadata, by permission). Asking FAISS for exactly ``k`` would
then return fewer than ``k`` survivors, so ``search`` asks for ``ceil(k * overfetch)``
(plus the number of known tombstones), keeps the survivors, and asks again with a
doubled depth only for the queries that are still short.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np

from index import flat

Keep = Callable[[np.ndarray], np.ndarray]  # ids (n,) -> bool mask (n,)


def search(
    index: faiss.Index,
    xq: np.ndarray,
    k: int,
    *,
    tombstones: np.ndarray | None = None,
    keep: Keep | None = None,
    overfetch: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` of shape (nq, k): the best ``k`` ids per query that are not tombstoned and pass ``keep``.

    Rows are padded with ``-inf`` / ``-1`` when fewer than ``k`` results survive in the whole index.
    """
    if k < 1 or overfetch < 1:
        raise ValueError(f"need k >= 1 and overfetch >= 1, got k={k}, overfetch={overfetch}")
    xq = np.ascontiguousarray(np.atleast_2d(xq), dtype=np.float32)
    nq, ntotal = len(xq), int(index.ntotal)
    dead = np.asarray(tombstones if tombstones is not None else [], dtype=np.int64)
    D_out = np.full((nq, k), -np.inf, dtype=np.float32)
    I_out = np.full((nq, k), -1, dtype=np.int64)
    todo = np.arange(nq)
    depth = min(ntotal, math.ceil(k * overfetch) + len(dead))
    while len(todo) and depth > 0:
        D, I = flat.search(index, xq[todo], depth)  # exact indexes take flat's BLAS path
        short = []
        for row, q in enumerate(todo):
            ok = I[row] >= 0
            if len(dead):
                ok &= ~np.isin(I[row], dead)
            if keep is not None and ok.any():
                ok[ok] = keep(I[row][ok])
            d, i = D[row][ok][:k], I[row][ok][:k]
            D_out[q, : len(d)], I_out[q, : len(i)] = d, i
            if len(i) < k and depth < ntotal:
                short.append(q)
        todo = np.array(short, dtype=np.int64)
        depth = min(ntotal, depth * 2)
    return D_out, I_out
