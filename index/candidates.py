"""The one candidate loop: overfetch past tombstones, filters, a score cutoff and near-duplicates.

An index keeps deleted items (tombstones) until it is compacted, and callers drop candidates
(items deleted since indexing, metadata filters, a minimum score, near-copies of a better hit).
Asking FAISS for exactly ``k`` would then return fewer than ``k`` survivors, so :func:`search`
asks for ``ceil(k * overfetch)`` (plus the number of known tombstones), keeps the survivors, and
asks again with a doubled depth only for the queries that are still short and could still gain.
Every way of dropping a candidate extends this loop; nothing above it runs a second one. The
API's search endpoints go through it too, and its dynamic batcher searches the first round of
several requests at once with :func:`first_round`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np

from index import flat
from index.dedupe import MAX_DEDUPE, near_duplicates

Keep = Callable[[np.ndarray], np.ndarray]  # unique ids (n,) -> bool mask (n,)
OVERFETCH = 1.5
# Scores this close are one tie, ordered by id. FAISS's blocked product scores bit-identical stored
# vectors (one image ingested twice) a last bit or two apart, by the rows' places in its blocks, and
# which one wins changes with the query's own rounding: copies came back out of id order.
TIE = 1e-6


def best_first(d: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` best first, ties by id, where a tie is a run of scores each within :data:`TIE`
    of the one before."""
    order = np.lexsort((i, -d))
    d, i = d[order], i[order]
    if len(d) > 1:
        run = np.concatenate([[0], np.cumsum(-np.diff(d) > TIE)])  # a new run where the drop exceeds TIE
        order = np.lexsort((i, run))
        d, i = d[order], i[order]
    return d, i


class VectorsUnavailable(RuntimeError):
    """The index cannot give back its vectors, which near-duplicate removal compares."""


def first_depth(ntotal: int, k: int, tombstones: int = 0, overfetch: float = OVERFETCH) -> int:
    """How many candidates :func:`search` asks for in its first round."""
    return min(ntotal, math.ceil(k * overfetch) + tombstones)


def first_round(index: faiss.Index, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first round of :func:`search` for a batch of queries that each want at most ``k``
    results, searched as one product; hand each row to :func:`search` as ``first``."""
    return flat.search(index, np.ascontiguousarray(xq, dtype=np.float32), first_depth(int(index.ntotal), k))


def search(
    index: faiss.Index,
    xq: np.ndarray,
    k: int,
    *,
    tombstones: np.ndarray | None = None,
    keep: Keep | None = None,
    min_score: float | None = None,
    allowed: np.ndarray | None = None,
    dedupe: float | None = None,
    overfetch: float = OVERFETCH,
    first: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` of shape (nq, k): the best ``k`` ids per query that are not tombstoned, pass
    ``keep``, score at least ``min_score`` and, with ``dedupe``, are not near-copies of a better one.

    Candidates are ranked by score, ties by id. ``allowed`` restricts the search to those ids
    before ranking (``flat.search``): the way a selective filter is applied; a broad one is better
    checked by ``keep`` on the candidates. ``dedupe`` is a cosine similarity: a candidate at least
    that close to a better one kept is dropped (``index.dedupe``); it compares at most
    ``MAX_DEDUPE`` candidates a query, so ``k`` may be at most half of that, and it raises
    :class:`VectorsUnavailable` for an index that cannot give back its vectors.
    ``first`` is the first round's ``(D, I)`` when it was already searched (:func:`first_round`):
    at least :func:`first_depth` wide, or it is searched again.
    ``keep`` is called once a round with the distinct candidate ids of every query (one DB
    lookup, not one a query) and never twice for the same id. Rows are padded with ``-inf`` /
    ``-1`` when fewer than ``k`` results survive in the whole index.
    """
    if k < 1 or overfetch < 1:
        raise ValueError(f"need k >= 1 and overfetch >= 1, got k={k}, overfetch={overfetch}")
    if dedupe is not None and k > MAX_DEDUPE // 2:
        raise ValueError(f"dedupe works on the first {MAX_DEDUPE // 2} results, asked for {k}")
    xq = np.ascontiguousarray(np.atleast_2d(xq), dtype=np.float32)
    nq, ntotal = len(xq), int(index.ntotal)
    if allowed is not None:
        allowed = np.unique(np.asarray(allowed, dtype=np.int64))
        ntotal = min(ntotal, len(allowed))
    if dedupe is not None:
        ntotal = min(ntotal, MAX_DEDUPE)
    judge = _Judge(index, tombstones, keep, min_score, dedupe)
    D_out = np.full((nq, k), -np.inf, dtype=np.float32)
    I_out = np.full((nq, k), -1, dtype=np.int64)
    todo = np.arange(nq)
    depth = first_depth(ntotal, k, len(judge.dead), overfetch)
    while len(todo) and depth > 0:
        if first is not None and len(todo) == nq and first[1].shape[1] >= depth:
            D, I = first[0][:, :depth], first[1][:, :depth]
        else:  # exact indexes take flat's BLAS path
            D, I = flat.search(index, xq[todo], depth, allowed)
        first = None
        survivors = judge.survivors(D, I)
        short = []
        for row, q in enumerate(todo):
            d, i = survivors[row]
            D_out[q, : min(k, len(d))], I_out[q, : min(k, len(i))] = d[:k], i[:k]
            exhausted = depth >= ntotal or (min_score is not None and D[row, -1] < min_score)
            if len(i) < k and not exhausted:
                short.append(q)
        todo = np.array(short, dtype=np.int64)
        depth = min(ntotal, depth * 2)
    return D_out, I_out


class _Judge:
    """What a candidate must pass, with what was learnt about each id kept across rounds."""

    def __init__(self, index, tombstones, keep: Keep | None, min_score: float | None, dedupe: float | None):
        self.index, self.keep, self.min_score, self.dedupe = index, keep, min_score, dedupe
        self.dead = np.asarray(tombstones if tombstones is not None else [], dtype=np.int64)
        self.verdicts: dict[int, bool] = {}
        self.vectors: dict[int, np.ndarray] = {}

    def survivors(self, D: np.ndarray, I: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each row's surviving ``(scores, ids)``, best first, ties (:data:`TIE`) by id."""
        ok = I >= 0
        if len(self.dead):
            ok &= ~np.isin(I, self.dead)
        if self.min_score is not None:
            ok &= D >= self.min_score
        if self.keep is not None and ok.any():
            self._judge(np.unique(I[ok]))
            ok[ok] = np.fromiter((self.verdicts[i] for i in I[ok].tolist()), dtype=bool, count=int(ok.sum()))
        if self.dedupe is not None and ok.any():
            self._fetch_vectors(np.unique(I[ok]))
        rows = []
        for d, i, o in zip(D, I, ok, strict=True):
            d, i = best_first(d[o], i[o])
            if self.dedupe is not None and len(i):
                kept = near_duplicates(np.stack([self.vectors[j] for j in i.tolist()]), self.dedupe)
                d, i = d[kept], i[kept]
            rows.append((d, i))
        return rows

    def _judge(self, ids: np.ndarray) -> None:
        """Ask ``keep`` about the ids not judged yet, and remember its answers."""
        new = np.array([i for i in ids.tolist() if i not in self.verdicts], dtype=np.int64)
        if len(new):
            assert self.keep is not None
            mask = np.asarray(self.keep(new), dtype=bool)
            if mask.shape != new.shape:
                raise ValueError(f"keep returned a mask of shape {mask.shape} for {new.shape} ids")
            self.verdicts.update(zip(new.tolist(), mask.tolist(), strict=True))

    def _fetch_vectors(self, ids: np.ndarray) -> None:
        """The stored vectors of the ids not fetched yet, in one call to the index."""
        new = np.array([i for i in ids.tolist() if i not in self.vectors], dtype=np.int64)
        if len(new):
            try:
                vectors = self.index.reconstruct_batch(new)
            except RuntimeError as e:
                raise VectorsUnavailable(f"this index cannot give back its vectors: {e}") from e
            self.vectors.update(zip(new.tolist(), np.asarray(vectors, dtype=np.float32), strict=True))
