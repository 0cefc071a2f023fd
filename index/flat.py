"""Exact inner-product search keyed by DB ids: the ``IDMap2,Flat`` index and its fast BLAS path.

Vectors are L2-normalised, so inner product is cosine similarity. Ids in the
index are the items' primary keys (``IndexIDMap2``), never row positions.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np


def build_exact(xb: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """An ``IDMap2,Flat`` inner-product index over ``xb`` with ``ids`` as labels."""
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if xb.ndim != 2 or len(xb) != len(ids):
        raise ValueError(f"xb {xb.shape} and ids {ids.shape} disagree")
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(xb.shape[1]))
    if len(xb):
        index.add_with_ids(xb, ids)
    return index


def search(index: faiss.Index, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` for queries ``xq``; ``I`` holds item ids, -1 where fewer than k exist.

    Exact ``IDMap(2),Flat`` inner-product indexes are searched with one BLAS matrix
    product over FAISS's own storage (no copy) and a partial sort: on 2 cores that was
    ~3x faster than ``IndexFlat.search`` both for one query and for 64, which
    runs a single query on one thread and a batch in small BLAS blocks (docs/benchmarks.md,
    exact baselines). Every other index goes through FAISS.
    """
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if xq.ndim == 1:
        xq = xq[None, :]
    k = max(1, min(int(k), max(int(index.ntotal), 1)))
    parts = _exact_parts(index)
    if parts is None:
        return index.search(xq, k)
    return _blas_search(*parts, xq, k)


SIM_CHUNK_FLOATS = 1 << 24  # similarities held at once by the BLAS path: 64 MiB


def _exact_parts(index: faiss.Index) -> tuple[np.ndarray, np.ndarray] | None:
    """Zero-copy ``(vectors, ids)`` views of a non-empty ``IDMap(2)`` over an inner-product ``IndexFlat``."""
    if not isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2) or index.ntotal == 0:
        return None
    inner: Any = faiss.downcast_index(index.index)  # SWIG: the concrete class is known only at run time
    if type(inner) not in (faiss.IndexFlatIP, faiss.IndexFlat) or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    n, d = int(index.ntotal), int(index.d)
    xb = faiss.rev_swig_ptr(inner.get_xb(), n * d).reshape(n, d)
    ids = faiss.rev_swig_ptr(index.id_map.data(), n)
    return xb, ids


def _blas_search(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if xq.shape[1] != xb.shape[1]:
        raise ValueError(f"queries have dimension {xq.shape[1]}, the index {xb.shape[1]}")
    n = len(xb)
    D = np.empty((len(xq), k), dtype=np.float32)
    I = np.empty((len(xq), k), dtype=np.int64)
    step = max(1, SIM_CHUNK_FLOATS // n)
    for q0 in range(0, len(xq), step):
        sims = xq[q0 : q0 + step] @ xb.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), sims.shape)
        scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        D[q0 : q0 + step] = np.take_along_axis(scores, order, axis=1)
        I[q0 : q0 + step] = ids[np.take_along_axis(top, order, axis=1)]
    return D, I
