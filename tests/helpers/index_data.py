"""For the index tests: synthetic corpora with DB-like ids, plans at test size, brute-force checks."""

from contextlib import contextmanager

import faiss
import numpy as np

from index import factory

N, D_DIM, NQ, K = 5000, 32, 200, 10
PQ_M = 4  # 8 dims a sub-vector: coarse, but OPQ trains in ~1 s (m=16 takes ~10 s on 2 cores)


@contextmanager
def one_faiss_thread():
    """Run FAISS on one thread. On 2 shared cores, OpenMP threads spin-waiting for one another made
    the many small k-means steps of OPQ training up to 40x slower (0.3 s -> 12 s) in this suite."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def mixture(n: int, d: int, clusters: int = 50, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    """Unit vectors from a Gaussian mixture: ``clusters`` random unit centres plus isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def db_ids(n: int, seed: int = 1) -> np.ndarray:
    """Large random int64 ids, so a row position passed off as an id cannot go unnoticed."""
    ids = np.random.default_rng(seed).integers(2**40, 2**62, n, dtype=np.int64)
    assert len(np.unique(ids)) == n
    return ids


def plan_for(kind: str, n: int = N, d: int = D_DIM) -> factory.IndexPlan:
    return factory.make_plan(kind, n, d, m=PQ_M if kind == "ivf_pq" else None)


def exhaustive(index: faiss.Index) -> None:
    """Probe every list, so the only error left is the codes' own (none for Flat codes)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = ivf.nlist


def decoded(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)`` as the index stores them (lossy for SQ/PQ), through the IDMap2 row map."""
    inner = index.index
    return faiss.vector_to_array(index.id_map), inner.reconstruct_n(0, inner.ntotal)


def assert_matches_brute_force(D, I, xq, ids, xb, k, atol=1e-4):
    """Scores equal the exact top-k of ``xq @ xb.T``; ids may differ only where scores tie."""
    sims = xq @ xb.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    np.testing.assert_allclose(D, np.take_along_axis(sims, order, axis=1), atol=atol)
    by_id = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    for q in range(len(xq)):
        for rank in range(k):
            if I[q, rank] != ids[order[q, rank]]:
                assert abs(sims[q, by_id[int(I[q, rank])]] - sims[q, order[q, rank]]) < atol
