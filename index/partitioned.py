"""One corpus in several indexes searched side by side, so that a single query uses every core.

FAISS parallelises a search over its queries: one query walks an HNSW graph on one thread, while
exact search (a matrix product) runs on every core. Text queries on an image graph need a walk of
~2,000 candidates at 1M x 512 (docs/findings.md, F23), so a lone query leaves the other cores
idle for its whole 15 ms. :class:`PartitionedIndex` cuts the corpus into ``P`` interleaved parts
(row ``i`` of the build goes to part ``i % P``, so every part is a uniform sample of it), builds
one index a part, searches a small batch on all parts at once, one thread a part (FAISS releases
the GIL while it searches), and merges the parts' top ``k``. A batch of at least as many queries
as there are threads is searched part after part instead: each part already spreads it over the
cores.

The trade-off, measured by ``benchmarks/bench_index.py`` (docs/benchmarks.md, index-mixture):
each part walks its own beam, so a query costs ``P`` walks of a graph of ``n / P`` vectors where
one graph costs one walk. It buys single-query latency with idle cores, not throughput under a
full load.

Persisted as one FAISS file a part (:mod:`index.store`); FAISS's own ``IndexShards`` can neither
be written to a file nor remove or reconstruct vectors, which is why this is not that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faiss
import numpy as np

# (part, queries, k, allowed ids of that part or None) -> (D, I): how one part is searched
PartSearch = Callable[[Any, np.ndarray, int, "np.ndarray | None"], tuple[np.ndarray, np.ndarray]]


def _plain(part: Any, xq: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if allowed is not None:
        raise ValueError("an allowed-id restriction needs index.flat.search")
    return part.search(xq, k)


def _one_omp_thread() -> None:
    """A part's search thread runs FAISS on itself alone (OpenMP's thread count is per calling thread): else
    every part's search opens an OpenMP team whose threads spin-wait on the cores the other parts need."""
    faiss.omp_set_num_threads(1)


class PartitionedIndex:
    """``P`` FAISS indexes over disjoint parts of one corpus (ids unique across parts), searched as one."""

    def __init__(self, parts: Sequence[Any]):
        if not parts:
            raise ValueError("a partitioned index needs at least one part")
        dims = {int(p.d) for p in parts}
        metrics = {int(p.metric_type) for p in parts}
        if len(dims) != 1 or len(metrics) != 1:
            raise ValueError(f"parts disagree: dimensions {sorted(dims)}, metrics {sorted(metrics)}")
        self.parts = list(parts)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._ids: list[np.ndarray] | None = None  # each part's ids, sorted (cached; reset by add)

    # the part of faiss.Index's interface the service uses
    @property
    def d(self) -> int:
        return int(self.parts[0].d)

    @property
    def metric_type(self) -> int:
        return int(self.parts[0].metric_type)

    @property
    def ntotal(self) -> int:
        return sum(int(p.ntotal) for p in self.parts)

    @property
    def is_trained(self) -> bool:
        return all(p.is_trained for p in self.parts)

    def search(self, xq: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        if params is not None:
            raise ValueError("search parameters are per part: use index.flat.search for an id restriction")
        return self.search_with(_plain, xq, k)

    def search_with(
        self, search_part: PartSearch, xq: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search every part with ``search_part`` and merge: ``(D, I)`` of the best ``k`` (``-1`` padded).
        ``allowed`` (sorted unique ids) is cut into each part's own ids before its search."""
        xq = np.ascontiguousarray(np.atleast_2d(xq), dtype=np.float32)
        own = self._allowed_by_part(allowed) if allowed is not None else [None] * len(self.parts)
        jobs = [(part, mine) for part, mine in zip(self.parts, own, strict=True) if mine is None or len(mine)]
        if len(jobs) > 1 and len(xq) < faiss.omp_get_max_threads():
            pool = self._executor()
            futures = [pool.submit(search_part, part, xq, k, mine) for part, mine in jobs]
            results = [f.result() for f in futures]
        else:
            results = [search_part(part, xq, k, mine) for part, mine in jobs]
        return merge(results, len(xq), k)

    def add_with_ids(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors, dealt to the parts so that their sizes stay as even as they can."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        sizes = np.array([int(p.ntotal) for p in self.parts])
        target = np.diff(np.round(np.linspace(0, sizes.sum() + len(ids), len(self.parts) + 1)).astype(int))
        gets = np.maximum(target - sizes, 0)
        while gets.sum() < len(ids):  # rounding: give the rest to the smallest parts
            gets[np.argmin(sizes + gets)] += 1
        while gets.sum() > len(ids):
            gets[np.argmax(gets)] -= 1
        start = 0
        with self._lock:
            self._ids = None
            for part, take in zip(self.parts, gets.tolist(), strict=True):
                if take:
                    part.add_with_ids(x[start : start + take], ids[start : start + take])
                    start += take

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (every one must be held: ``RuntimeError`` otherwise, as in FAISS)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.d), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        for part, held in zip(self.parts, self._sorted_ids(), strict=True):
            mine = np.isin(ids, held)
            if mine.any():
                out[mine] = part.reconstruct_batch(np.ascontiguousarray(ids[mine]))
                found |= mine
        if not found.all():
            raise RuntimeError(f"{int((~found).sum())} of the ids are not in the index")
        return out

    def clone(self) -> PartitionedIndex:
        return PartitionedIndex([faiss.clone_index(p) for p in self.parts])

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=len(self.parts), thread_name_prefix="index-part", initializer=_one_omp_thread
                )
            return self._pool

    def _sorted_ids(self) -> list[np.ndarray]:
        with self._lock:
            if self._ids is None:
                self._ids = [np.sort(faiss.vector_to_array(p.id_map).astype(np.int64)) for p in self.parts]
            return self._ids

    def _allowed_by_part(self, allowed: np.ndarray) -> list[np.ndarray]:
        allowed = np.asarray(allowed, dtype=np.int64)
        return [allowed[np.isin(allowed, held, assume_unique=True)] for held in self._sorted_ids()]

    def __getstate__(self) -> dict:  # the pool and lock do not travel
        raise TypeError("a PartitionedIndex is written with index.store.publish, not pickled")


def merge(results: list[tuple[np.ndarray, np.ndarray]], nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several ``(D, I)`` results by inner product (higher first), ``-inf`` / ``-1`` padded;
    equal scores keep the earlier part first."""
    if not results:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
    D = np.concatenate([np.asarray(r[0], dtype=np.float32) for r in results], axis=1)
    I = np.concatenate([np.asarray(r[1], dtype=np.int64) for r in results], axis=1)
    D = np.where(I >= 0, D, -np.inf).astype(np.float32)
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    if D.shape[1] < k:
        D = np.hstack([D, np.full((nq, k - D.shape[1]), -np.inf, np.float32)])
        I = np.hstack([I, np.full((nq, k - I.shape[1]), -1, np.int64)])
    return D, I


def parts_of(index: Any) -> list[Any]:
    """The FAISS indexes inside ``index``: its parts, or itself."""
    return list(index.parts) if isinstance(index, PartitionedIndex) else [index]
