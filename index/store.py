"""Published index folders: ``index.faiss`` + ``index.json``, written once, read by every API process.

A folder is published atomically (:func:`crossmodal_kernel.atomic.atomic_dir`) and never
rewritten, which is what makes memory-mapping it safe. The sidecar states what the index is:
its kind and factory string, the search setting it was tuned to and its measured recall.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from crossmodal_kernel.atomic import atomic_dir
from index.partitioned import PartitionedIndex, parts_of
from index.query_aware import hnsw_of

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
META_FILE = "index.json"
PART_FILE = "part-{:03d}.faiss"  # a partitioned index (index.parts): one file a part, ``parts`` in the sidecar


@dataclass
class PublishedIndex:
    index: Any  # a faiss.Index, or an index.parts.PartitionedIndex of them
    path: Path
    meta: dict = field(default_factory=dict)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def kind(self) -> str | None:
        """The ladder rung (``index.factory.KINDS``) it was built as, as stored at publication."""
        return self.meta.get("kind")


def publish(index: faiss.Index, out_dir: Path, meta: dict) -> Path:
    """Write ``index`` and its sidecar JSON into ``out_dir`` all at once; an existing folder is refused.

    ``meta["factory"]`` defaults to the index's own description and ``search_params`` to the
    setting it holds, so readers know what they have. GPU indexes must be moved to the CPU
    first (``gpu.to_cpu``).
    """
    pieces = parts_of(index)
    full = {
        "metric": "ip",
        "dim": int(index.d),
        "ntotal": int(index.ntotal),
        "published_at": time.time(),
        **meta,
    }
    full.setdefault("factory", describe(index))
    search = search_params(index)
    if search:
        full.setdefault("search_params", search)
    if isinstance(index, PartitionedIndex):
        full["parts"] = len(pieces)
    with atomic_dir(Path(out_dir)) as tmp:
        if isinstance(index, PartitionedIndex):
            for i, part in enumerate(pieces):
                faiss.write_index(part, str(tmp / PART_FILE.format(i)))
        else:
            faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True))
    return Path(out_dir)


def load(path: Path, mmap: bool = False) -> PublishedIndex:
    """Read a published index folder (or a bare ``.faiss`` file).

    ``mmap=True`` maps the inverted lists of IVF indexes read-only from the file
    (FAISS turns them into an ``OnDiskInvertedLists``): the OS page cache holds
    them once for every process, and startup is instant. The ``IDMap2``
    id tables, centroids and codebooks are still read into RAM (~56 B a
    vector for the id tables). Flat and HNSW indexes have no mappable part
    and are read whole. A mapped index is read-only: never ``add`` to it, FAISS
    throws inside an OpenMP region and that aborts the whole process. Deleting
    a mapped folder leaves existing mappings valid on POSIX.
    """
    path = Path(path)
    file = path / INDEX_FILE if path.is_dir() else path
    meta_file = file.parent / META_FILE
    meta = json.loads(meta_file.read_text()) if path.is_dir() and meta_file.exists() else {}
    if meta.get("parts"):  # HNSW parts: nothing to map
        pieces = [faiss.read_index(str(path / PART_FILE.format(i))) for i in range(int(meta["parts"]))]
        return PublishedIndex(index=PartitionedIndex(pieces), path=path, meta=meta)
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(file), flags)
    if mmap and faiss.try_extract_index_ivf(index) is None:
        log.info("%s is not an IVF index: read into RAM instead of memory-mapped", file)
    return PublishedIndex(index=index, path=path, meta=meta)


def held_ids(index: Any) -> np.ndarray:
    """The ids an ``IDMap``/``IDMap2`` index (or every part of a partitioned one, part after part) holds, in
    storage order."""
    return np.concatenate([faiss.vector_to_array(p.id_map).astype(np.int64) for p in parts_of(index)])


def describe(index: Any) -> str:
    """The ``index_factory`` string of ``index`` (its first part's, if partitioned), or its class name when
    FAISS cannot say."""
    from faiss.contrib.factory_tools import reverse_index_factory

    index = parts_of(index)[0]
    try:
        return str(reverse_index_factory(index))
    except NotImplementedError:
        return type(index).__name__


def search_params(index: Any) -> dict:
    """The tunable search setting held by ``index`` (stored with it by FAISS, recorded in the sidecar); a
    partitioned index's parts hold the same one."""
    index = parts_of(index)[0]
    ivf = faiss.try_extract_index_ivf(index)
    inner: Any = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    if ivf is not None:
        refine = {"k_factor": int(inner.k_factor)} if isinstance(inner, faiss.IndexRefine) else {}
        return {"nprobe": int(ivf.nprobe), **refine}
    hnsw = hnsw_of(index)  # through a refine stage and a PCA stage
    if hnsw is not None:
        refine = {"k_factor": int(inner.k_factor)} if isinstance(inner, faiss.IndexRefine) else {}
        return {"efSearch": int(hnsw.efSearch), **refine}
    return {}
