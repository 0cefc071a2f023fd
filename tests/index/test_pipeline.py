"""The build pipeline: the update decision, and an automatically chosen HNSW that misses its target
falling back to the IVF ladder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from index import factory, pipeline, store, tune


@pytest.fixture
def corpus():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((3000, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    return np.arange(3000, dtype=np.int64) * 3 + 1, xb


@pytest.fixture
def hnsw_recall(monkeypatch):
    """Make the ladder pick HNSW for a small corpus, and let the test decide what HNSW's tuning measures."""
    monkeypatch.setattr(factory, "EXACT_MAX_WORK", 0)
    real_tune = tune.tune
    fake = {"hnsw": None, "ivf": None}

    def fake_tune(index, plan, *args, **kwargs):
        result = real_tune(index, plan, *args, **kwargs)
        forced = fake["hnsw"] if plan.kind == "hnsw" else fake["ivf"]
        if forced is None:
            return result
        reached = forced >= result.target_recall
        return dataclasses.replace(result, recall=forced, reached=reached, note=f"forced {forced}")

    monkeypatch.setattr(tune, "tune", fake_tune)
    return fake


def build(tmp_path, corpus, **policy):
    ids, xb = corpus
    xq = pipeline.tuning_queries(xb, None)
    built = pipeline.build(ids, xb, xq, tmp_path / "index", pipeline.IndexPolicy(**policy))
    meta = store.load(built.path).meta
    assert meta["kind"] == built.kind and meta["factory"] == built.factory
    return built, meta


def test_hnsw_that_misses_the_target_falls_back_to_ivf(tmp_path, corpus, hnsw_recall):
    hnsw_recall["hnsw"] = 0.5
    built, meta = build(tmp_path, corpus)
    assert meta["kind"].startswith("ivf") and "IVF" in meta["factory"]
    assert meta["fallback_from"]["factory"].startswith("IDMap2,HNSW") and meta["fallback_from"]["recall_at_10"] == 0.5
    assert meta["recall_at_10"] > 0.5 and built.ntotal == 3000 and store.load(built.path).ntotal == 3000


def test_hnsw_that_reaches_the_target_is_kept(tmp_path, corpus, hnsw_recall):
    _, meta = build(tmp_path, corpus)
    assert meta["kind"] == "hnsw" and meta["reached"] and "fallback_from" not in meta


def test_the_better_of_the_two_is_kept_when_neither_reaches(tmp_path, corpus, hnsw_recall):
    hnsw_recall["hnsw"], hnsw_recall["ivf"] = 0.8, 0.6
    _, meta = build(tmp_path, corpus)
    assert meta["kind"] == "hnsw" and meta["recall_at_10"] == 0.8 and "fallback_from" not in meta


def test_a_kind_set_by_the_operator_is_never_replaced(tmp_path, corpus, hnsw_recall):
    hnsw_recall["hnsw"] = 0.5
    _, meta = build(tmp_path, corpus, kind="hnsw")
    assert meta["kind"] == "hnsw" and meta["recall_at_10"] == 0.5


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
