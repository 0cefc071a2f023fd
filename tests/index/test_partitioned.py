"""index.partitioned: one corpus in several indexes, searched side by side and merged as one."""

import threading

import faiss
import numpy as np
import pytest

from index import builder, factory, flat, ladder, partitioned, pipeline, store, tune
from tests.helpers.index_data import db_ids, mixture


def exact_parts(xb, ids, p=2):
    return partitioned.PartitionedIndex([flat.build_exact(xb[i::p], ids[i::p]) for i in range(p)])


def brute(xb, ids, xq, k):
    scores = xq @ xb.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, 1), ids[top]


def test_exact_parts_merge_to_the_exact_answer():
    xb, ids, xq = mixture(3000, 16, seed=1), db_ids(3000), mixture(20, 16, seed=2)
    index = exact_parts(xb, ids, 3)
    assert index.ntotal == 3000 and index.d == 16
    D, I = flat.search(index, xq, 10)
    gt_D, gt_I = brute(xb, ids, xq, 10)
    np.testing.assert_array_equal(I, gt_I)
    np.testing.assert_allclose(D, gt_D, rtol=1e-5)
    D1, I1 = index.search(xq[:1], 10)  # a single query: every part on its own thread
    np.testing.assert_array_equal(I1, gt_I[:1])


def test_more_results_than_held_are_padded():
    xb, ids = mixture(6, 8, seed=1), db_ids(6)
    D, I = partitioned.merge(
        [(np.array([[0.9, 0.1]]), np.array([[5, -1]])), (np.array([[0.5]]), np.array([[7]]))], 1, 4
    )
    assert I.tolist() == [[5, 7, -1, -1]] and D[0, 2] == -np.inf
    _, I = exact_parts(xb, ids).search(xb[:1], 6)
    assert sorted(I[0].tolist()) == sorted(ids.tolist())


def test_an_allowed_restriction_reaches_each_part_with_its_own_ids():
    xb, ids, xq = mixture(2000, 16, seed=3), db_ids(2000), mixture(5, 16, seed=4)
    index = exact_parts(xb, ids)
    allowed = np.sort(ids[::7])
    rows = np.isin(ids, allowed)
    D, I = flat.search(index, xq, 10, allowed)
    np.testing.assert_array_equal(I, brute(xb[rows], ids[rows], xq, 10)[1])
    only_one_part = np.sort(ids[0::2][:3])  # every id in part 0
    _, I = flat.search(index, xq, 5, only_one_part)
    assert set(I[I >= 0].tolist()) <= set(only_one_part.tolist()) and (I >= 0).sum(axis=1).tolist() == [3] * 5
    with pytest.raises(ValueError, match="per part"):
        index.search(xq, 5, params=faiss.SearchParameters())


def test_a_single_query_runs_on_every_part_at_once(monkeypatch):
    xb, ids = mixture(1000, 8, seed=5), db_ids(1000)
    index = exact_parts(xb, ids, 2)
    seen: list[str] = []
    barrier = threading.Barrier(2, timeout=10)  # passes only if both parts are searched at the same time

    def search_part(part, xq, k, allowed):
        seen.append(threading.current_thread().name)
        if len(xq) == 1:
            barrier.wait()
        return part.search(xq, k)

    monkeypatch.setattr(partitioned.faiss, "omp_get_max_threads", lambda: 2)
    index.search_with(search_part, xb[:1], 5)
    assert len(seen) == 2 and all(name.startswith("index-part") for name in seen)
    seen.clear()
    index.search_with(search_part, xb[:64], 5)  # a batch: part after part, each spread over the cores
    assert seen == [threading.current_thread().name] * 2


def test_adds_keep_the_parts_even_and_vectors_come_back():
    xb, ids = mixture(1003, 8, seed=6), db_ids(1003)
    index = exact_parts(xb[:600], ids[:600], 3)
    index.add_with_ids(xb[600:], ids[600:])
    sizes = [int(p.ntotal) for p in index.parts]
    assert sum(sizes) == 1003 and max(sizes) - min(sizes) <= 1
    np.testing.assert_array_equal(index.reconstruct_batch(ids[[5, 700, 1002]]), xb[[5, 700, 1002]])
    assert sorted(store.held_ids(index).tolist()) == sorted(ids.tolist())
    with pytest.raises(RuntimeError, match="not in the index"):
        index.reconstruct_batch(np.array([1, 2], dtype=np.int64))
    _, I = index.search(xb[1002:1003], 1)
    assert I[0, 0] == ids[1002]


def test_the_split_plan_builds_one_graph_a_part_and_round_trips(tmp_path):
    n, d = 3000, 32
    xb, ids, xq = mixture(n, d, seed=7), db_ids(n), mixture(100, d, seed=8)
    plan = factory.make_plan("hnsw_split", n, d, parts=2)
    assert plan.parts == 2 and plan.factory == factory.make_plan("hnsw", n, d).factory
    assert factory.make_plan("hnsw", n, d, parts=2).parts == 1
    index = builder.build_index(builder.array_shards(ids, xb), d, plan)
    assert isinstance(index, partitioned.PartitionedIndex) and [p.ntotal for p in index.parts] == [1500, 1500]
    assert set(store.held_ids(index.parts[0]).tolist()) == set(ids[0::2].tolist())  # interleaved rows
    tune.set_search_param(index, "efSearch", 96)
    tune.set_refine_factor(index, 2)
    assert all(store.search_params(p) == {"efSearch": 96, "k_factor": 2} for p in index.parts)
    gt_D, gt_I = tune.exact_ground_truth(builder.array_shards(ids, xb), xq, 10)
    assert tune.measure_recall(index, xq, gt_I, 10, gt_D) > 0.9
    store.publish(index, tmp_path / "i", {"kind": plan.kind})
    loaded = store.load(tmp_path / "i")
    assert loaded.meta["parts"] == 2 and loaded.ntotal == n and loaded.meta["search_params"]["efSearch"] == 96
    assert sorted(p.name for p in (tmp_path / "i").glob("*.faiss")) == ["part-000.faiss", "part-001.faiss"]
    np.testing.assert_array_equal(flat.search(loaded.index, xq, 10)[1], flat.search(index, xq, 10)[1])
    assert sorted(store.held_ids(loaded.index).tolist()) == sorted(ids.tolist())


def test_the_ladder_measures_the_split_graph_only_with_cores_to_split_for():
    n, d = 4000, 32
    kinds = lambda p: [plan.kind for plan in factory.ladder(n, d, 2**30, kinds=("hnsw_split",), parts=p)]  # noqa: E731
    assert kinds(1) == [factory.choose_index(n, d, 2**30).kind] and kinds(2) == ["hnsw_split"]  # 1: nothing else asked
    xb, ids, xq = mixture(n, d, seed=9), db_ids(n), mixture(300, d, seed=10)
    plan = factory.make_plan("hnsw_split", n, d, parts=2)
    index, _, rung, _ = ladder.measure(ids, xb, ladder.Queries(xq[:150], same=xq[150:]), [plan], 0.95)
    assert isinstance(index, partitioned.PartitionedIndex) and rung.reached and rung.extra["parts"] == 2
    assert rung.qps_single > 0 and rung.qps_batch > 0


def test_an_extended_split_index_stays_split(tmp_path):
    n, d = 3000, 32
    xb, ids = mixture(n, d, seed=11), db_ids(n)
    xq = pipeline.tuning_queries(xb, None)
    first = pipeline.build(ids[:2400], xb[:2400], xq, tmp_path / "a", pipeline.IndexPolicy(kind="hnsw_split"))
    current = store.load(first.path)
    assert isinstance(current.index, partitioned.PartitionedIndex) == (faiss.omp_get_max_threads() > 1)
    grown = pipeline.extend(current, ids[2400:], xb[2400:], (ids, xb), xq, tmp_path / "b")
    loaded = store.load(grown.path)
    assert loaded.ntotal == n and loaded.kind == "hnsw_split" and 0.5 < loaded.meta["recall_at_10"] <= 1
    assert sorted(store.held_ids(loaded.index).tolist()) == sorted(ids.tolist())
