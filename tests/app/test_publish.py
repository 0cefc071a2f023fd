"""build_for_publication: an automatically chosen HNSW that misses its target falls back to the IVF ladder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app import publish
from index import factory, tune
from tests.app.conftest import make_settings


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


def test_hnsw_that_misses_the_target_falls_back_to_ivf(tmp_path, corpus, hnsw_recall):
    hnsw_recall["hnsw"] = 0.5
    index, meta = publish.build_for_publication(make_settings(tmp_path, "sqlite://"), 1, "image", *corpus)
    assert meta["kind"].startswith("ivf") and "IVF" in meta["factory"]
    assert meta["fallback_from"]["factory"].startswith("IDMap2,HNSW") and meta["fallback_from"]["recall_at_10"] == 0.5
    assert meta["recall_at_10"] > 0.5 and index.ntotal == 3000


def test_hnsw_that_reaches_the_target_is_kept(tmp_path, corpus, hnsw_recall):
    index, meta = publish.build_for_publication(make_settings(tmp_path, "sqlite://"), 1, "image", *corpus)
    assert meta["kind"] == "hnsw" and meta["reached"] and "fallback_from" not in meta


def test_the_better_of_the_two_is_kept_when_neither_reaches(tmp_path, corpus, hnsw_recall):
    hnsw_recall["hnsw"], hnsw_recall["ivf"] = 0.8, 0.6
    _, meta = publish.build_for_publication(make_settings(tmp_path, "sqlite://"), 1, "image", *corpus)
    assert meta["kind"] == "hnsw" and meta["recall_at_10"] == 0.8 and "fallback_from" not in meta


def test_a_kind_set_by_the_operator_is_never_replaced(tmp_path, corpus, hnsw_recall):
    hnsw_recall["hnsw"] = 0.5
    settings = make_settings(tmp_path, "sqlite://", index_kind="hnsw")
    _, meta = publish.build_for_publication(settings, 1, "image", *corpus)
    assert meta["kind"] == "hnsw" and meta["recall_at_10"] == 0.5
