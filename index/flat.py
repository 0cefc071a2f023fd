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
    """``(D, I)`` for queries ``xq``; ``I`` holds item ids, -1 where fewer than k exist."""
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if xq.ndim == 1:
        xq = xq[None, :]
    k = max(1, min(int(k), max(int(index.ntotal), 1)))
    return index.search(xq, k)
