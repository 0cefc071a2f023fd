"""Batched search with overfetch: room for tombstones, filters and a score cutoff without a second query.

An index keeps deleted items (tombstones) until it is compacted, and callers filter results
(items deleted since indexing, metadata filters, a minimum score). Asking FAISS for exactly
``k`` would then return fewer than ``k`` survivors, so :func:`search` asks for
``ceil(k * overfetch)`` (plus the number of known tombstones), keeps the survivors, and asks
again with a doubled depth only for the queries that are still short and could still gain.
This is the one overfetch loop: the API's search endpoints go through it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np

from index import flat

Keep = Callable[[np.ndarray], np.ndarray]  # unique ids (n,) -> bool mask (n,)
OVERFETCH = 1.5


def first_depth(ntotal: int, k: int, tombstones: int = 0, overfetch: float = OVERFETCH) -> int:
    """How many candidates :func:`search` asks for in its first round."""
    return min(ntotal, math.ceil(k * overfetch) + tombstones)


def search(
    index: faiss.Index,
    xq: np.ndarray,
    k: int,
    *,
    tombstones: np.ndarray | None = None,
    keep: Keep | None = None,
    min_score: float | None = None,
    allowed: np.ndarray | None = None,
    overfetch: float = OVERFETCH,
    first: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` of shape (nq, k): the best ``k`` ids per query that are not tombstoned, pass ``keep``
    and score at least ``min_score``.

    ``allowed`` restricts the search to those ids before ranking (``flat.search``): the way a
    selective filter is applied; a broad one is better checked by ``keep`` on the candidates.
    ``first`` is the first round's ``(D, I)`` when it was already searched (a batch of queries
    from several requests searched in one product, ``app.batching``): at least
    :func:`first_depth` wide, or it is searched again.
    ``keep`` is called once a round with the distinct candidate ids of every query (one DB
    lookup, not one a query) and never twice for the same id. Rows are padded with ``-inf`` /
    ``-1`` when fewer than ``k`` results survive in the whole index.
    """
    if k < 1 or overfetch < 1:
        raise ValueError(f"need k >= 1 and overfetch >= 1, got k={k}, overfetch={overfetch}")
    xq = np.ascontiguousarray(np.atleast_2d(xq), dtype=np.float32)
    nq, ntotal = len(xq), int(index.ntotal)
    if allowed is not None:
        allowed = np.unique(np.asarray(allowed, dtype=np.int64))
        ntotal = min(ntotal, len(allowed))
    dead = np.asarray(tombstones if tombstones is not None else [], dtype=np.int64)
    D_out = np.full((nq, k), -np.inf, dtype=np.float32)
    I_out = np.full((nq, k), -1, dtype=np.int64)
    verdicts: dict[int, bool] = {}
    todo = np.arange(nq)
    depth = first_depth(ntotal, k, len(dead), overfetch)
    while len(todo) and depth > 0:
        if first is not None and len(todo) == nq and first[1].shape[1] >= depth:
            D, I = first[0][:, :depth], first[1][:, :depth]
        else:  # exact indexes take flat's BLAS path
            D, I = flat.search(index, xq[todo], depth, allowed)
        first = None
        ok = I >= 0
        if len(dead):
            ok &= ~np.isin(I, dead)
        if min_score is not None:
            ok &= D >= min_score
        if keep is not None and ok.any():
            _judge(np.unique(I[ok]), keep, verdicts)
            ok[ok] = np.fromiter((verdicts[i] for i in I[ok].tolist()), dtype=bool, count=int(ok.sum()))
        short = []
        for row, q in enumerate(todo):
            d, i = D[row][ok[row]][:k], I[row][ok[row]][:k]
            D_out[q, : len(d)], I_out[q, : len(i)] = d, i
            exhausted = depth >= ntotal or (min_score is not None and D[row, -1] < min_score)
            if len(i) < k and not exhausted:
                short.append(q)
        todo = np.array(short, dtype=np.int64)
        depth = min(ntotal, depth * 2)
    return D_out, I_out


def _judge(ids: np.ndarray, keep: Keep, verdicts: dict[int, bool]) -> None:
    """Ask ``keep`` about the ids not judged yet, and remember its answers."""
    new = np.array([i for i in ids.tolist() if i not in verdicts], dtype=np.int64)
    if len(new):
        mask = np.asarray(keep(new), dtype=bool)
        if mask.shape != new.shape:
            raise ValueError(f"keep returned a mask of shape {mask.shape} for {new.shape} ids")
        verdicts.update(zip(new.tolist(), mask.tolist(), strict=True))
