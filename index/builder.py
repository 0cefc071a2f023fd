"""Build any :class:`~index.factory.IndexPlan` from embedding shards that need not fit in RAM.

Two streaming passes over the shards:

1. *scan*: collect the ids (8 bytes a vector, which ``IDMap2`` holds anyway)
   and draw a uniform training sample. Each row gets a random key and the
   ``train_sample`` rows with the smallest keys are kept (a reservoir), so
   only the sample and one shard are ever in memory.
2. *add*: ``add_with_ids`` shard by shard, skipping rows whose id appears again
   in a later shard (a re-embedded item: the last one wins, as in
   ``shards.load_all``).

``shard_iter_factory`` is a zero-argument callable returning a fresh iterator
of ``(ids, x)`` pairs (``ids`` int64 DB ids, ``x`` float32 ``(n, d)``), e.g.
``shard_reader(dir)``; it is called once a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index.factory import CPU_ONLY, IndexPlan, estimate_memory, refine_k_factor
from index.partitioned import PartitionedIndex, parts_of
from index.shards import iter_shards

log = logging.getLogger(__name__)

ShardIterFactory = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Until tune() measures better values: FAISS's defaults (nprobe=1, efSearch=16) give poor recall.
DEFAULT_SEARCH = {"nprobe": 16, "efSearch": 64}


def shard_reader(directory: Path) -> ShardIterFactory:
    """A ``shard_iter_factory`` over the shards in ``directory``."""
    return partial(iter_shards, Path(directory))


def array_shards(ids: np.ndarray, xb: np.ndarray, shard_size: int = 65536) -> ShardIterFactory:
    """A ``shard_iter_factory`` over in-memory arrays, cut into ``shard_size`` rows."""

    def shards() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i0 in range(0, len(ids), shard_size):
            yield ids[i0 : i0 + shard_size], xb[i0 : i0 + shard_size]

    return shards


def last_occurrence_masks(id_chunks: list[np.ndarray]) -> list[np.ndarray] | None:
    """Per shard, which rows hold the last occurrence of their id; ``None`` when all ids are unique."""
    all_ids = np.concatenate(id_chunks) if id_chunks else np.empty(0, np.int64)
    _, last_rev = np.unique(all_ids[::-1], return_index=True)
    if len(last_rev) == len(all_ids):
        return None
    keep = np.zeros(len(all_ids), dtype=bool)
    keep[len(all_ids) - 1 - last_rev] = True
    return np.split(keep, np.cumsum([len(c) for c in id_chunks])[:-1])


def build_index(
    shard_iter_factory: ShardIterFactory,
    d: int,
    plan: IndexPlan,
    *,
    train_sample: int | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    gpu: bool = False,
) -> faiss.Index:
    """Train ``plan.factory`` on a random sample of the shards, then stream every vector in.

    ``train_sample`` defaults to ``plan.train_sample``. Deterministic for a
    given ``seed`` and sequence of rows, however the rows are cut into shards.
    With ``gpu`` (the caller's decision, made once: ``app.runtime.faiss_gpu``) k-means training
    and adding run on every GPU (HNSW has no GPU version and stays on the CPU); the result is a
    CPU index.
    """
    from index.gpu import maybe_gpu, to_cpu

    cpu_index = faiss.index_factory(d, plan.factory, faiss.METRIC_INNER_PRODUCT)
    on_gpu = gpu and plan.kind not in CPU_ONLY
    index = maybe_gpu(cpu_index, log.info) if on_gpu else cpu_index
    want = (plan.train_sample if train_sample is None else train_sample) if not index.is_trained else 0
    log.info(
        "building %s (%s) for ~%d x %d: index ~%.1f MiB, training sample ~%.1f MiB",
        plan.factory,
        plan.kind,
        plan.n,
        d,
        estimate_memory(plan.factory, plan.n, d) / 2**20,
        4 * d * min(want, plan.n) / 2**20,
    )
    id_chunks, sample = _scan(shard_iter_factory, d, want, seed, progress)
    n = sum(len(c) for c in id_chunks)
    if not index.is_trained:
        if len(sample) == 0:
            raise ValueError(f"{plan.factory} needs training vectors but the shards are empty")
        if progress:
            progress("train", 0, 1)
        _train(index, sample)
        if progress:
            progress("train", 1, 1)
    del sample
    masks = last_occurrence_masks(id_chunks)
    kept = n if masks is None else int(sum(m.sum() for m in masks))
    if masks is not None:
        log.warning("%d rows repeat an id of a later shard; keeping the last", n - kept)
    # FAISS HNSW builds a worse graph when vectors arrive in several ``add`` calls: on the
    # benchmark's real embeddings (many near-duplicates) recall@10 at efSearch=64 fell from
    # 0.997-1.0 to 0.958-0.991 with 65,536-row adds (benchmarks/probe_hnsw_batches.py).
    # So HNSW gets one call; it holds every vector in RAM anyway, and this costs one more
    # float32 copy of the corpus while it is built.
    one_add = plan.kind.startswith("hnsw")
    if one_add:
        all_x = np.empty((kept, d), dtype=np.float32)
        all_ids = np.empty(kept, dtype=np.int64)
    done = filled = 0
    for i, (ids, x) in enumerate(shard_iter_factory()):
        if i >= len(id_chunks) or not np.array_equal(ids, id_chunks[i]):
            raise RuntimeError("the shards changed between the two passes of the build")
        x = np.ascontiguousarray(x, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if masks is not None:
            x, ids = x[masks[i]], ids[masks[i]]
        if one_add:
            all_x[filled : filled + len(ids)], all_ids[filled : filled + len(ids)] = x, ids
        elif len(ids):
            index.add_with_ids(x, ids)
        filled += len(ids)
        done += len(id_chunks[i])
        if progress:
            progress("read" if one_add else "add", done, n)
    if done != n:
        raise RuntimeError("the shards changed between the two passes of the build")
    if one_add and kept:
        if progress:
            progress("add", 0, kept)
        index = _add_all(index, plan.parts, all_x, all_ids)
        del all_x, all_ids
        if progress:
            progress("add", kept, kept)
    if on_gpu:
        index = to_cpu(index)
    for part in parts_of(index):
        if plan.search_param:
            faiss.ParameterSpace().set_index_parameter(
                part, plan.search_param, min(DEFAULT_SEARCH[plan.search_param], max(plan.candidates))
            )
        if ",Refine(" in plan.factory:
            faiss.ParameterSpace().set_index_parameter(part, "k_factor_rf", refine_k_factor(plan))
    return index


def _add_all(index: faiss.Index, parts: int, x: np.ndarray, ids: np.ndarray) -> Any:
    """``x`` added to ``index`` in one call, or, for ``parts > 1``, row ``i`` to a copy ``i % parts`` of the
    trained, empty ``index``: a :class:`~index.parts.PartitionedIndex` (module docstring there)."""
    if parts <= 1:
        index.add_with_ids(x, ids)
        return index
    copies = [faiss.clone_index(index) for _ in range(parts)]
    for p, part in enumerate(copies):
        part.add_with_ids(np.ascontiguousarray(x[p::parts]), np.ascontiguousarray(ids[p::parts]))
    return PartitionedIndex(copies)


def _train(index: faiss.Index, sample: np.ndarray) -> None:
    """``index.train`` without two costly extras ``index_factory`` switches on for PQ.

    * Polysemous training (reordering PQ codes for Hamming filtering) takes
      ~20x longer than the PQ itself, and we never search in polysemous mode.
    * OPQ learns its rotation against an 8-bit PQ by default; giving it the
      final code size trains for what the index will use, and is faster.
    """
    ivf = faiss.try_extract_index_ivf(index)
    ivfpq: Any = faiss.downcast_index(ivf) if ivf is not None else None  # SWIG: concrete class at run time
    opq: Any = None
    if isinstance(ivfpq, faiss.IndexIVFPQ):
        ivfpq.do_polysemous_training = False  # type: ignore[attr-defined]  # missing from faiss's stubs
        inner: Any = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index  # type: ignore[attr-defined]
        if isinstance(inner, faiss.IndexPreTransform):
            opq = faiss.downcast_VectorTransform(inner.chain.at(0))  # type: ignore[attr-defined]
    if isinstance(opq, faiss.OPQMatrix):
        pq = faiss.ProductQuantizer(opq.d_out, opq.M, ivfpq.pq.nbits)  # kept alive until trained
        opq.pq = pq
        try:
            index.train(sample)
        finally:
            opq.pq = None  # a borrowed pointer: do not leave it dangling
    else:
        index.train(sample)


def _scan(
    shard_iter_factory: ShardIterFactory, d: int, want: int, seed: int, progress: Progress | None
) -> tuple[list[np.ndarray], np.ndarray]:
    """Pass 1: every shard's ids, and ``want`` uniformly drawn rows (in row order)."""
    rng = np.random.default_rng(seed)
    id_chunks: list[np.ndarray] = []
    keys = np.empty(0)
    rows = np.empty(0, dtype=np.int64)
    vecs = np.empty((0, d), dtype=np.float32)
    offset = 0
    for ids, x in shard_iter_factory():
        if x.ndim != 2 or x.shape[1] != d or len(ids) != len(x):
            raise ValueError(f"shard with ids {np.shape(ids)} and vectors {x.shape} does not match d={d}")
        id_chunks.append(np.asarray(ids, dtype=np.int64).copy())
        if want:
            # the random keys depend only on the row's position in the stream, not on shard cuts
            k_new = rng.random(len(ids))
            keys = np.concatenate([keys, k_new])
            rows = np.concatenate([rows, np.arange(offset, offset + len(ids))])
            vecs = np.concatenate([vecs, np.asarray(x, dtype=np.float32)])
            if len(keys) > want:
                top = np.argpartition(keys, want - 1)[:want]
                keys, rows, vecs = keys[top], rows[top], vecs[top]
        offset += len(ids)
        if progress:
            progress("scan", offset, 0)
    order = np.argsort(rows, kind="stable")
    return id_chunks, np.ascontiguousarray(vecs[order])
