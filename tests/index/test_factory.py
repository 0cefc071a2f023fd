"""Index choice over a grid of corpus sizes, dimensions, budgets and devices; memory estimates."""

import itertools
import math
import re

import faiss
import numpy as np
import pytest

from index import builder, factory, partitioned
from tests.helpers.index_data import db_ids, mixture, one_faiss_thread

GiB = 2**30
RUNG = {kind: i for i, kind in enumerate(factory.KINDS)}  # lower = more memory, better recall
GRID = list(
    itertools.product(
        [1_000, 20_000, 50_000, 200_000, 3_000_000, 20_000_000, 200_000_000, 2_000_000_000],
        [32, 64, 512, 768],
        [GiB // 4, 4 * GiB, 64 * GiB],
        [False, True],
    )
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_faiss_thread():
        yield


def nlist_of(plan):
    m = re.search(r"IVF(\d+)", plan.factory)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("n, d, budget, gpu", GRID)
def test_every_plan_is_well_formed(n, d, budget, gpu):
    plan = factory.choose_index(n, d, budget, gpu=gpu)
    assert plan.metric == "ip" and plan.factory.startswith("IDMap2,") and plan.reason
    assert plan.memory_bytes == factory.estimate_memory(plan.factory, n, d)
    assert faiss.index_factory(d, plan.factory, faiss.METRIC_INNER_PRODUCT).d == d  # FAISS parses it
    assert plan.memory_bytes <= budget or "OVER BUDGET" in plan.reason
    assert 0 <= plan.train_sample <= n
    assert list(plan.candidates) == sorted(set(plan.candidates))
    if gpu:
        assert plan.kind not in factory.CPU_ONLY  # no HNSW, fast-scan or refine on FAISS GPUs
    if plan.kind == "flat":
        assert n * d <= factory.EXACT_MAX_WORK and plan.search_param is None
    if plan.kind == "hnsw":
        assert n <= factory.HNSW_MAX_N and plan.search_param == "efSearch"
    if (nlist := nlist_of(plan)) is not None:
        assert plan.search_param == "nprobe" and max(plan.candidates) <= nlist
        assert nlist & (nlist - 1) == 0  # a power of two
        assert plan.train_sample >= min(n, factory.MIN_POINTS_PER_CENTROID * nlist)
        if n >= 25_000:
            assert 4 * math.sqrt(n) <= nlist <= 16 * math.sqrt(n)
    if plan.kind == "ivf_pq":
        m = int(re.search(r",PQ(\d+)", plan.factory).group(1))
        assert d % m == 0 and f"OPQ{m}," in plan.factory
        assert m in factory.GPU_PQ_M or not gpu


@pytest.mark.parametrize("n, d, gpu", sorted({(n, d, gpu) for n, d, _, gpu in GRID}))
def test_more_memory_never_buys_a_lossier_index(n, d, gpu):
    plans = [factory.choose_index(n, d, budget, gpu=gpu) for budget in (GiB // 8, GiB, 8 * GiB, 512 * GiB)]
    rungs = [RUNG[p.kind] for p in plans]
    assert rungs == sorted(rungs, reverse=True)
    fitting = [p.memory_bytes for p in plans if "OVER BUDGET" not in p.reason]
    assert fitting == sorted(fitting)


@pytest.mark.parametrize(
    "n, d, budget, gpu, expected",
    [
        (10_000, 512, GiB, False, "IDMap2,Flat"),
        (50_000, 512, GiB, True, "IDMap2,Flat"),
        (200_000, 64, 64 * GiB, False, "IDMap2,Flat"),  # n*d small enough: exact is still fast
        (200_000, 512, 16 * GiB, False, "IDMap2,HNSW32,SQ8,Refine(Flat)"),
        (200_000, 512, 16 * GiB, True, "IDMap2,IVF2048,Flat"),
        (20_000_000, 512, 64 * GiB, False, "IDMap2,IVF32768,Flat"),  # past HNSW_MAX_N
        (20_000_000, 512, 16 * GiB, False, "IDMap2,IVF32768,SQ8"),
        (200_000_000, 512, 16 * GiB, False, "IDMap2,OPQ16,IVF65536,PQ16"),
        (200_000_000, 768, 24 * GiB, True, "IDMap2,OPQ48,IVF65536,PQ48"),
    ],
)
def test_choices_at_landmarks(n, d, budget, gpu, expected):
    assert factory.choose_index(n, d, budget, gpu=gpu).factory == expected


def test_nothing_fits_says_over_budget_and_picks_the_smallest_sane_code():
    plan = factory.choose_index(2_000_000_000, 512, GiB)
    assert plan.kind == "ivf_pq" and "OVER BUDGET" in plan.reason
    assert plan.factory.endswith(f",PQ{min(factory.pq_choices(512))}")


def test_ivf_nlist_follows_sqrt_n_but_keeps_enough_points_per_centroid():
    assert factory.ivf_nlist(1_000_000) == 4096  # 4 sqrt(n) = 4000
    assert factory.ivf_nlist(5_000) == 128  # 4 sqrt(n) = 283 would leave 18 points a centroid
    assert factory.ivf_nlist(10) == 1


def test_pq_choices_divide_d():
    assert factory.pq_choices(512) == [64, 32, 16]
    assert factory.pq_choices(768, gpu=True) == [96, 64, 48, 32, 24]
    assert factory.pq_choices(32) == [16, 8, 4, 2, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown index kind"):
        factory.make_plan("lsh", 10, 8)
    with pytest.raises(ValueError, match="divide"):
        factory.make_plan("ivf_pq", 10_000, 32, m=5)
    with pytest.raises(ValueError, match="cannot estimate"):
        factory.estimate_memory("IDMap2,LSH", 10, 8)


@pytest.mark.parametrize("kind", factory.KINDS)
def test_estimate_bounds_the_real_size(kind):
    """The estimate covers the serialized index and adds only IDMap2's in-RAM hash table."""
    n, d = 2000, 16
    plan = factory.make_plan(kind, n, d, m=4 if kind == "ivf_pq" else None)
    index = builder.build_index(builder.array_shards(db_ids(n), mixture(n, d)), d, plan)
    written = sum(faiss.serialize_index(part).nbytes for part in partitioned.parts_of(index))
    assert written <= plan.memory_bytes <= 1.1 * written + (factory.IDMAP2_BYTES - 8) * n


def test_estimates_scale_as_documented():
    n, d = 1_000_000, 512
    flat = factory.estimate_memory("IDMap2,Flat", n, d)
    assert flat == n * (4 * d + factory.IDMAP2_BYTES)
    sq8 = factory.estimate_memory("IDMap2,IVF4096,SQ8", n, d)
    pq = factory.estimate_memory("IDMap2,OPQ64,IVF4096,PQ64", n, d)
    hnsw = factory.estimate_memory("IDMap2,HNSW32,Flat", n, d)
    assert pq < sq8 < flat < hnsw
    assert np.isclose(hnsw - flat, n * (2 * 32 * 4 * 1.05 + 12), rtol=1e-6)
    hnsw_sq8 = factory.estimate_memory("IDMap2,HNSW32,SQ8,Refine(Flat)", n, d)
    assert np.isclose(hnsw_sq8 - hnsw, n * d + 2 * 4 * d, rtol=1e-6)  # the 1-byte codes beside the floats


def test_the_measured_ladder_lists_what_fits():
    n, d = 1_000_000, 512
    kinds = lambda plans: [p.kind for p in plans]  # noqa: E731
    assert kinds(factory.ladder(n, d, 64 * GiB)) == ["flat", "ivf_flat", "ivf_fs_refine", "hnsw", "hnsw_pca"]
    assert kinds(factory.ladder(n, d, 64 * GiB, query_aware=True, parts=2)) == list(factory.LADDER)
    split = ("hnsw_pca", "hnsw_split")  # asked for: measured with cores to split for, not with one
    assert kinds(factory.ladder(n, d, 64 * GiB, kinds=split, parts=2)) == list(split)
    assert kinds(factory.ladder(n, d, 64 * GiB, kinds=split)) == ["hnsw_pca"]
    # under 2 GiB only the compressed rungs fit, and the memory fallbacks join them
    assert kinds(factory.ladder(n, d, int(1.5 * GiB), query_aware=True)) == ["ivf_fs_refine", "ivf_sq8", "ivf_pq"]
    assert kinds(factory.ladder(n, d, 64 * GiB, kinds=("hnsw", "ivf_sq8"))) == ["hnsw", "ivf_sq8"]
    assert kinds(factory.ladder(20_000_000, 512, 512 * GiB)) == ["flat", "ivf_flat", "ivf_fs_refine"]  # no HNSW
    over = factory.ladder(2_000_000_000, 512, GiB)
    assert len(over) == 1 and "OVER BUDGET" in over[0].reason
    assert all(p.memory_bytes <= 64 * GiB for p in factory.ladder(n, d, 64 * GiB))
