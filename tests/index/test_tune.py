"""Ground truth by streaming brute force, tie-tolerant recall, and tuning by measurement."""

import faiss
import numpy as np
import pytest

from index import builder, factory, query_aware, tune
from index.shards import write_shard
from tests.helpers.index_data import D_DIM, NQ, N, db_ids, mixture, one_faiss_thread, plan_for

K = 10


def naive_recall(I, xq, ids, xb, k):
    """Recall@k written out plainly: a hit is a true top-k id, or any id scoring the k-th score."""
    row = {int(i): r for r, i in enumerate(ids)}
    total = 0.0
    for q in range(len(xq)):
        scores = xb @ xq[q]
        kth = np.sort(scores)[::-1][k - 1]
        got = [int(i) for i in I[q, :k] if i >= 0]
        total += sum(1 for i in got if scores[row[i]] >= kth - tune.TIE_TOL) / k
    return total / len(xq)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_faiss_thread():
        yield


@pytest.fixture(scope="module")
def corpus():
    x = mixture(N + NQ, D_DIM, seed=11)
    ids, xb, xq = db_ids(N, seed=12), x[:N], x[N:]
    source = builder.array_shards(ids, xb, shard_size=1500)
    gt_D, gt_I = tune.exact_ground_truth(source, xq, K)
    return ids, xb, xq, source, gt_D, gt_I


def test_ground_truth_streams_over_shards_and_uses_db_ids(tmp_path, corpus):
    ids, xb, xq, _, gt_D, gt_I = corpus
    for a, b in [(0, 7), (7, 2500), (2500, N)]:  # one shard smaller than k
        write_shard(tmp_path, ids[a:b], xb[a:b])
    D, I = tune.exact_ground_truth(builder.shard_reader(tmp_path), xq, K)
    x16 = xb.astype(np.float16).astype(np.float32)
    sims = xq @ x16.T
    order = np.argsort(-sims, axis=1)[:, :K]
    np.testing.assert_allclose(D[:, :K], np.take_along_axis(sims, order, axis=1), atol=1e-5)
    assert np.mean(I[:, :K] == ids[order]) > 0.99  # (float16 shards: a rare near-tie may swap)
    assert gt_I.shape == (NQ, K) and np.isin(gt_I, ids).all()  # random data: no ties, exactly k columns


def test_ground_truth_carries_every_tie_of_the_kth_score():
    rng = np.random.default_rng(0)
    xb = mixture(300, 16, seed=1)
    xq = mixture(3, 16, seed=2)
    # the 3rd best item of query 0 re-uploaded 5 times under new ids: 6 items tie for rank 3
    third = np.argsort(-(xb @ xq[0]))[2]
    xb = np.vstack([xb, np.repeat(xb[third : third + 1], 5, axis=0)])
    ids = rng.choice(10**12, len(xb), replace=False).astype(np.int64)
    D, I = tune.exact_ground_truth(builder.array_shards(ids, xb, 100), xq, 3)
    assert I.shape == (3, 8)  # 2 + 6 tied
    tied = {int(ids[third]), *ids[300:].tolist()}
    assert set(I[0, 2:].tolist()) == tied and np.all(D[0, 2:] == D[0, 2])
    assert np.all(I[1:, 3:] == -1) and np.all(np.isinf(D[1:, 3:]))  # others: padding only

    # any two of the tied duplicates count as correct, strictly or not
    alternative = np.array([[I[0, 0], I[0, 1], ids[-1]]])
    assert tune.recall_at_k(alternative, I[:1], 3, D[:1]) == 1.0
    strict = tune.recall_at_k(alternative, I[:1, :3], 3)
    assert strict == (1.0 if ids[-1] == I[0, 2] else 2 / 3)


def test_recall_at_k_by_hand():
    gt_I = np.array([[1, 2, 3], [4, 5, 6]])
    I = np.array([[3, 2, 9], [7, 8, -1]])
    assert tune.recall_at_k(I, gt_I, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert tune.recall_at_k(gt_I, gt_I, 3) == 1.0


def test_ground_truth_takes_the_last_vector_of_a_repeated_id():
    xq = mixture(4, 16, seed=3)
    xb = mixture(200, 16, seed=4)
    ids = db_ids(200)
    stale = np.vstack([xb[:50], xq])  # stale copies of 4 ids sit right on the queries
    stale_ids = np.concatenate([ids[:50], ids[:4]])
    source = lambda: iter([(stale_ids, stale), (ids, xb)])  # noqa: E731
    D, I = tune.exact_ground_truth(source, xq, 5)
    sims = xq @ xb.T
    np.testing.assert_allclose(D, np.sort(sims, axis=1)[:, ::-1][:, :5], atol=1e-6)


def test_exact_index_has_recall_one(corpus):
    ids, xb, xq, source, gt_D, gt_I = corpus
    index = builder.build_index(source, D_DIM, plan_for("flat"))
    assert tune.measure_recall(index, xq, gt_I, K, gt_D) == 1.0
    result = tune.tune(index, plan_for("flat"), xq, gt_I, K, gt_D=gt_D)
    assert result.reached and result.param is None and len(result.curve) == 1


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat", "ivf_sq8"])
def test_tune_reaches_the_target_with_the_smallest_value(corpus, kind):
    ids, xb, xq, source, gt_D, gt_I = corpus
    plan = plan_for(kind)
    index = builder.build_index(source, D_DIM, plan)
    result = tune.tune(index, plan, xq, gt_I, K, target_recall=0.95, gt_D=gt_D)

    assert result.reached and result.recall >= 0.95 and "recall@10" in result.note
    assert [p.value for p in result.curve] == list(plan.candidates[: len(result.curve)])
    assert all(p.recall < 0.95 for p in result.curve[:-1]) and result.curve[-1].value == result.value
    assert all(p.qps > 0 for p in result.curve)
    # the index is left at the chosen value ...
    if kind == "hnsw":
        assert query_aware.hnsw_of(index).efSearch == result.value
    else:
        assert faiss.extract_index_ivf(index).nprobe == result.value
    # ... and the recall it reports is what an independent recomputation finds
    _, I = index.search(xq, K)
    assert result.recall == pytest.approx(naive_recall(I, xq, ids, xb, K), abs=1e-12)
    assert result.recall == tune.measure_recall(index, xq, gt_I, K, gt_D)


def test_unreachable_target_keeps_the_best_recall_and_says_so():
    n, d = 2000, 16
    x = mixture(n + NQ, d, seed=21)
    ids, xb, xq = db_ids(n), x[:n], x[n:]
    source = builder.array_shards(ids, xb)
    gt_D, gt_I = tune.exact_ground_truth(source, xq, K)
    plan = factory.make_plan("ivf_pq", n, d, m=4)  # 4 bytes a vector: PQ noise caps recall well below 0.99
    index = builder.build_index(source, d, plan)
    result = tune.tune(index, plan, xq, gt_I, K, target_recall=0.99, gt_D=gt_D)
    assert not result.reached and "unreachable" in result.note
    assert len(result.curve) == len(plan.candidates)
    best = max(result.curve, key=lambda p: p.recall)
    assert result.recall == best.recall and result.value == best.value
    assert faiss.extract_index_ivf(index).nprobe == result.value
    assert result.recall == pytest.approx(naive_recall(index.search(xq, K)[1], xq, ids, xb, K), abs=1e-12)
