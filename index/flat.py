"""Exact inner-product indexes keyed by DB ids, published atomically.

Vectors are L2-normalised, so inner product is cosine similarity. Ids in the
index are the items' primary keys (``IndexIDMap2``), never row positions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

INDEX_FILE = "index.faiss"
META_FILE = "index.json"


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


@dataclass
class PublishedIndex:
    index: faiss.Index
    path: Path
    meta: dict = field(default_factory=dict)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)


def publish(index: faiss.Index, out_dir: Path, meta: dict) -> Path:
    """Write ``index`` + its sidecar JSON into ``out_dir`` all at once.

    Files go to a sibling temp folder that is renamed into place, so a reader
    sees either nothing or the whole index.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"refusing to overwrite published index {out_dir}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        full_meta = {
            "factory": "IDMap2,Flat",
            "metric": "ip",
            "dim": int(index.d),
            "ntotal": int(index.ntotal),
            "published_at": time.time(),
            **meta,
        }
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load(path: Path) -> PublishedIndex:
    path = Path(path)
    index = faiss.read_index(str(path / INDEX_FILE))
    meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).exists() else {}
    return PublishedIndex(index=index, path=path, meta=meta)


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
    inner = faiss.downcast_index(index.index)
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
