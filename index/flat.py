"""Exact inner-product search keyed by DB ids: the ``IDMap2,Flat`` index and its fast BLAS path.

Vectors are L2-normalised, so inner product is cosine similarity. Ids in the
index are the items' primary keys (``IndexIDMap2``), never row positions.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import torch

from index.partitioned import PartitionedIndex
from index.query_aware import hnsw_of


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


def search(
    index: faiss.Index, xq: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` for queries ``xq``; ``I`` holds item ids, -1 where fewer than k exist.

    ``allowed`` (sorted unique ids) restricts the search to those ids: on an exact index the
    product runs over just their rows; on any other, FAISS skips the rest (an ID selector with
    the index's own ``nprobe`` / ``efSearch``). Approximate indexes may then find fewer than
    ``k`` even where more are allowed (an HNSW graph walk or the probed IVF lists miss them).

    Exact ``IDMap(2),Flat`` inner-product indexes are searched with matrix products over
    FAISS's own storage (no copy) and ``torch.topk`` (:func:`_blas_search`): on 2 cores that was
    ~3x faster than ``IndexFlat.search`` both for one query and for 64, which
    runs a single query on one thread and a batch in small BLAS blocks (docs/benchmarks.md,
    exact baselines). Every other index goes through FAISS.
    """
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if xq.ndim == 1:
        xq = xq[None, :]
    k = max(1, min(int(k), max(int(index.ntotal), 1)))
    if isinstance(index, PartitionedIndex):  # each part searched as below, side by side, then merged
        return index.search_with(search, xq, k, allowed)
    parts = _exact_parts(index)
    if allowed is not None:
        if parts is not None:
            xb, ids = parts
            rows = np.flatnonzero(np.isin(ids, allowed, assume_unique=True))
            if not len(rows):
                return np.full((len(xq), k), -np.inf, np.float32), np.full((len(xq), k), -1, np.int64)
            D, I = _blas_search(xb[rows], ids[rows], xq, min(k, len(rows)))
            return _pad(D, I, k)
        if len(allowed) <= EXACT_SUBSET_MAX:
            exact = _exact_subset(index, allowed, xq, k)
            if exact is not None:
                return exact
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        return index.search(xq, k, params=selector_params(index, selector))
    if parts is None:
        return index.search(xq, k)
    return _blas_search(*parts, xq, k)


# A few thousand allowed ids are scored exactly from their stored vectors (when the index can give
# them back: HNSW,Flat can, IVF without a direct map cannot): an HNSW walk restricted by a selector
# found 6 of the true 10 in a test with 7% of the ids allowed.
EXACT_SUBSET_MAX = 8192


def _exact_subset(index: faiss.Index, allowed: np.ndarray, xq: np.ndarray, k: int):
    try:
        xs = index.reconstruct_batch(np.ascontiguousarray(allowed, dtype=np.int64))
    except RuntimeError:  # an id the index does not hold, or an index that cannot reconstruct
        return None
    D, I = _blas_search(np.ascontiguousarray(xs, dtype=np.float32), np.asarray(allowed), xq, min(k, len(allowed)))
    return _pad(D, I, k)


def selector_params(index: faiss.Index, selector: Any) -> Any:
    """Search parameters that carry ``selector`` and keep the index's tuned nprobe / efSearch."""
    swig: Any = faiss  # the SWIG classes take keyword arguments faiss's type stubs do not declare
    ivf = swig.try_extract_index_ivf(index)
    inner: Any = swig.downcast_index(index.index) if hasattr(index, "id_map") else index  # type: ignore[attr-defined]
    if isinstance(inner, faiss.IndexRefine):
        # IDMap2 translates the selector of the parameters it is given, but IndexRefine searches its base
        # index with the nested ones: translate for it (row -> id), and keep the SWIG objects alive.
        rows = swig.IDSelectorTranslated(index.id_map, selector) if hasattr(index, "id_map") else selector
        hnsw = hnsw_of(inner.base_index)  # through a PCA stage too
        if ivf is not None:
            base = swig.SearchParametersIVF(sel=rows, nprobe=int(ivf.nprobe))
        elif hnsw is not None:
            base = swig.SearchParametersHNSW(sel=rows, efSearch=int(hnsw.efSearch))
        else:
            base = swig.SearchParameters(sel=rows)
        # (a PCA stage hands parameters that are not its own to the graph unchanged: tests/index/test_flat.py)
        params = swig.IndexRefineSearchParameters(k_factor=float(inner.k_factor), base_index_params=base)
        params.keep_alive = (selector, rows, base)
        return params
    if ivf is not None:
        return swig.SearchParametersIVF(sel=selector, nprobe=int(ivf.nprobe))
    if hasattr(inner, "hnsw"):
        return swig.SearchParametersHNSW(sel=selector, efSearch=int(inner.hnsw.efSearch))
    return swig.SearchParameters(sel=selector)


def _pad(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if D.shape[1] == k:
        return D, I
    short = k - D.shape[1]
    return (
        np.hstack([D, np.full((len(D), short), -np.inf, np.float32)]),
        np.hstack([I, np.full((len(I), short), -1, np.int64)]),
    )


SIM_CHUNK_FLOATS = 1 << 24  # similarities held at once by the exact path: 64 MiB
QUERY_BLOCK = 256  # queries a product at most


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
    """Exact top-``k`` by inner product: one matrix product per block of corpus rows, ``torch.topk`` per
    block, and a last ``topk`` over the blocks' winners.

    Blocking over the *corpus* keeps a batch of queries in one product (cutting the batch into a
    few queries a product ran 2.7x slower than torch at 1M x 512, batch 64), and ``torch.topk``
    selects on every thread where ``np.argpartition`` used one (7x slower on 16 x 1M scores).
    Zero-copy: ``torch.from_numpy`` views FAISS's own storage.
    """
    if xq.shape[1] != xb.shape[1]:
        raise ValueError(f"queries have dimension {xq.shape[1]}, the index {xb.shape[1]}")
    n = len(xb)
    D = np.empty((len(xq), k), dtype=np.float32)
    I = np.empty((len(xq), k), dtype=np.int64)
    base = torch.from_numpy(xb)
    with torch.inference_mode():
        for q0 in range(0, len(xq), QUERY_BLOCK):
            q = torch.from_numpy(xq[q0 : q0 + QUERY_BLOCK])
            rows = max(k, SIM_CHUNK_FLOATS // len(q))
            vals, where = [], []
            for r0 in range(0, n, rows):
                block = base[r0 : r0 + rows]
                v, i = torch.topk(q @ block.T, min(k, len(block)), dim=1)
                vals.append(v)
                where.append(i + r0)
            v, i = (vals[0], where[0]) if len(vals) == 1 else _merge(vals, where, k)
            D[q0 : q0 + len(q)] = v.numpy()
            I[q0 : q0 + len(q)] = ids[i.numpy()]
    return D, I


def _merge(vals: list, where: list, k: int) -> tuple:
    v, i = torch.cat(vals, dim=1), torch.cat(where, dim=1)
    top, pos = torch.topk(v, k, dim=1)
    return top, torch.gather(i, 1, pos)
