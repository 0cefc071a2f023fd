"""The build pipeline: the update decision, and the measured ladder's choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from index import builder, factory, ladder, pipeline, store, tune


@pytest.fixture
def corpus():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((3000, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    return np.arange(3000, dtype=np.int64) * 3 + 1, xb


@pytest.fixture
def forced(monkeypatch):
    """Measure the whole ladder on a small corpus (no exact shortcut); the test may set a rung's
    measured ``(recall, single-query QPS)`` by kind."""
    monkeypatch.setattr(ladder, "EXACT_BELOW", 0)
    measured: dict[str, tuple[float, float]] = {}
    real = ladder._tune_and_time

    def fake(index, plan, *args, **kwargs):
        rung = real(index, plan, *args, **kwargs)
        if plan.kind not in measured:
            return rung
        recall, qps = measured[plan.kind]
        return dataclasses.replace(rung, recall=recall, reached=recall >= 0.95, qps_single=qps)

    monkeypatch.setattr(ladder, "_tune_and_time", fake)
    return measured


def build(tmp_path, corpus, train=None, **policy):
    ids, xb = corpus
    xq = pipeline.tuning_queries(xb, None)
    built = pipeline.build(ids, xb, xq, tmp_path / "index", pipeline.IndexPolicy(**policy), train=train)
    meta = store.load(built.path).meta
    assert meta["kind"] == built.kind and meta["factory"] == built.factory
    return built, meta


def test_the_fastest_rung_that_reaches_the_target_is_published(tmp_path, corpus, forced):
    forced.update({"flat": (1.0, 100), "ivf_flat": (0.96, 500), "ivf_fs_refine": (0.97, 900)})
    forced.update({"hnsw": (0.5, 5000), "hnsw_pca": (0.5, 5000)})
    built, meta = build(tmp_path, corpus)
    assert meta["kind"] == "ivf_fs_refine" and "Refine" in meta["factory"] and meta["qps_single"] == 900
    kinds = ["flat", "ivf_flat", "ivf_fs_refine", "hnsw", "hnsw_pca"]  # no training queries: no hnsw_qa
    assert [r["kind"] for r in meta["ladder"]] == kinds
    assert meta["reason"].startswith("measured ladder: ivf_fs_refine") and built.ntotal == 3000
    assert store.load(built.path).ntotal == 3000


def test_exact_search_is_published_where_it_is_the_fastest(tmp_path, corpus, forced):
    forced.update({"flat": (1.0, 9000), "ivf_flat": (0.99, 500), "ivf_fs_refine": (0.99, 900)})
    forced["hnsw"] = forced["hnsw_pca"] = (0.99, 5000)
    _, meta = build(tmp_path, corpus)
    assert meta["kind"] == "flat" and meta["exact"] and meta["factory"] == "IDMap2,Flat"


def test_when_no_rung_reaches_the_target_the_best_recall_wins(tmp_path, corpus, forced):
    forced.update({"ivf_flat": (0.6, 9000), "hnsw_pca": (0.8, 10)})
    _, meta = build(tmp_path, corpus, ladder=("ivf_flat", "hnsw_pca"))
    assert meta["kind"] == "hnsw_pca" and meta["recall_at_10"] == 0.8 and not meta["reached"]
    assert [r["kind"] for r in meta["ladder"]] == ["ivf_flat", "hnsw_pca"]


def test_a_kind_set_by_the_operator_is_never_replaced(tmp_path, corpus, forced):
    forced["hnsw_pca"] = (0.5, 1.0)
    _, meta = build(tmp_path, corpus, kind="hnsw_pca")
    assert meta["kind"] == "hnsw_pca" and meta["recall_at_10"] == 0.5 and len(meta["ladder"]) == 1
    with pytest.raises(ValueError, match="training queries"):
        build(tmp_path, corpus, kind="hnsw_qa")


def test_the_measured_ladder_end_to_end(tmp_path, corpus, monkeypatch):
    """Nothing faked: every rung is built, tuned on shifted (other-modality-like) queries and timed,
    the query-aware rung learns edges from training queries, and the published rung is the one the
    recorded measurements choose."""
    monkeypatch.setattr(ladder, "EXACT_BELOW", 0)
    ids, xb = corpus
    rng = np.random.default_rng(1)
    gap = rng.standard_normal(xb.shape[1]).astype(np.float32)
    other = xb[rng.permutation(len(xb))] + 0.3 * gap / np.linalg.norm(gap)
    other += 0.2 * rng.standard_normal(other.shape).astype(np.float32)
    xq, train = pipeline.split_queries(xb, other)
    assert train is not None and len(xq) == pipeline.TUNING_QUERIES and len(train) == len(other) - len(xq)
    policy = pipeline.IndexPolicy()
    built = pipeline.build(ids, xb, xq, tmp_path / "i", policy, train=train, served_name="text", same_name="image")
    meta = store.load(built.path).meta
    rungs = meta["ladder"]
    assert [r["kind"] for r in rungs] == list(factory.LADDER)
    for r in rungs:
        assert 0 <= r["recall"] <= 1 and r["qps_single"] > 0 and r["qps_batch"] > 0 and 0 <= r["recall_same"] <= 1
    qa = next(r for r in rungs if r["kind"] == "hnsw_qa")
    assert qa["extra"]["query_edges"]["added"] > 0
    chosen = max(rungs, key=lambda r: (r["reached"], r["qps_single"] if r["reached"] else r["recall"]))
    assert meta["kind"] == chosen["kind"] and meta["recall_at_10"] == chosen["recall"]
    assert set(meta["recall_by_query"]) == {"text", "image"}
    ground_truth = tune.exact_ground_truth(builder.array_shards(ids, xb), xq, 10)
    assert tune.measure_recall(store.load(built.path).index, xq, ground_truth[1], 10, ground_truth[0]) == pytest.approx(
        meta["recall_at_10"]
    )


def test_plan_update_skips_extends_and_compacts():
    ids = np.arange(10, dtype=np.int64)
    live = np.ones(10, dtype=bool)
    assert pipeline.plan_update(None, ids, live, 0.1).action == "rebuild"
    assert pipeline.plan_update(None, ids, np.zeros(10, dtype=bool), 0.1).action == "skip"
    assert pipeline.plan_update(ids, ids, live, 0.1).action == "skip"
    grown = pipeline.plan_update(ids[:8], ids, live, 0.1)
    assert grown.action == "extend" and grown.new.tolist() == [False] * 8 + [True] * 2
    live[0] = False  # one tombstone in ten: at the threshold, still extended
    one_dead = pipeline.plan_update(ids, ids, live, 0.1)
    assert one_dead.action == "skip" and one_dead.tombstones == 1
    live[1] = False  # two in ten: past it, rebuilt without them
    two_dead = pipeline.plan_update(ids, ids, live, 0.1)
    assert two_dead.action == "rebuild" and two_dead.tombstones == 2 and two_dead.new.sum() == 8


def test_extend_adds_without_retraining_and_remeasures(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(factory, "EXACT_MAX_WORK", 0)
    ids, xb = corpus
    first, _ = build(tmp_path, (ids[:2500], xb[:2500]), kind="ivf_flat")
    current = store.load(first.path)
    xq = pipeline.tuning_queries(xb, None)
    grown = pipeline.extend(current, ids[2500:], xb[2500:], (ids, xb), xq, tmp_path / "grown", tombstones=3)
    meta = store.load(grown.path).meta
    assert grown.ntotal == 3000 and grown.factory == first.factory and grown.kind == "ivf_flat"
    assert meta["incremental"] and meta["added"] == 500 and meta["tombstones"] == 3
    assert 0 < meta["recall_at_10"] <= 1 and meta["search_params"] == store.search_params(current.index)
