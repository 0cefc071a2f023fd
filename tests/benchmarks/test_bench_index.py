"""bench_index.py on a toy corpus: the pipeline runs end to end and its data generator is what it claims."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks import _index_measure, bench_index


def test_mixture_is_unit_norm_deterministic_and_queries_are_fresh():
    a = bench_index.mixture_dataset(2000, 32, 100, 0.75, 50, seed=1)
    b = bench_index.mixture_dataset(2000, 32, 100, 0.75, 50, seed=1)
    assert {k: v.shape for k, v in a.items()} == {"xb": (2000, 32), "xq_tune": (50, 32), "xq_eval": (50, 32)}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_allclose(np.linalg.norm(a[k], axis=1), 1.0, rtol=1e-5)
    # queries are new draws: none coincides with a corpus row
    assert (a["xq_eval"] @ a["xb"].T).max() < 0.9999


def test_noise_controls_difficulty():
    """More noise spreads each component, so a query's nearest neighbour is less similar."""
    easy = bench_index.mixture_dataset(3000, 32, 150, 0.2, 50)
    hard = bench_index.mixture_dataset(3000, 32, 150, 2.0, 50)
    top = {name: (d["xq_eval"] @ d["xb"].T).max(axis=1).mean() for name, d in (("easy", easy), ("hard", hard))}
    assert top["easy"] > top["hard"] + 0.1


def test_at_recall_picks_the_fastest_point_reaching_the_target():
    curve = [{"value": 1, "recall": 0.5, "qps_64": 900}, {"value": 2, "recall": 0.96, "qps_64": 500},
             {"value": 4, "recall": 0.99, "qps_64": 300}]  # fmt: skip
    assert _index_measure.at_recall(curve, 0.95)["value"] == 2
    assert _index_measure.at_recall(curve, 0.999) is None


def test_end_to_end_on_a_toy_corpus(monkeypatch, capsys):
    """The whole ladder run on a toy corpus (timings replaced by constants: no timing in CI)."""
    from index import tune

    argv = ["bench_index.py", "--dataset", "mixture", "--n", "12000", "--d", "16", "--components", "600",
            "--queries", "40", "--train-queries", "400", "--no-autofaiss", "--no-record"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(_index_measure, "qps", lambda index, xq, k, batch, budget_s=10.0: 100.0)
    monkeypatch.setattr(tune, "measure_qps", lambda index, xq, k=10, **kw: 100.0)
    import faiss

    monkeypatch.setattr(faiss, "omp_get_max_threads", lambda: 2)  # hnsw_split is measured whatever the machine
    bench_index.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    names = [r.split("|")[1].strip().strip("*").removesuffix(" (published)") for r in rows]
    assert names == ["exact Flat", "exact, torch matmul + topk", "exact, ours (index.flat.search)", "ours: flat",
                     "ours: ivf_flat", "ours: ivf_fs_refine", "ours: hnsw", "ours: hnsw_pca", "ours: hnsw_qa",
                     "ours: hnsw_split (not in the service's ladder)"]  # fmt: skip
    assert "(published)" not in rows[-1]  # an alternative is measured beside the ladder, never published
    assert sum("(published)" in r for r in rows) == 1
    assert float(rows[0].split("|")[6]) == pytest.approx(1.0) and float(rows[3].split("|")[6]) == pytest.approx(1.0)
    assert "Text-like queries" in out and "Recall–QPS curves" in out and "- ivf_flat (`nprobe`)" in out


def test_exact_only_compares_the_two_exact_baselines(monkeypatch, capsys):
    argv = ["bench_index.py", "--dataset", "mixture", "--n", "3000", "--d", "16", "--components", "150",
            "--queries", "20", "--exact-only", "--no-record"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(_index_measure, "qps", lambda index, xq, k, batch, budget_s=10.0: 50.0)
    bench_index.main()
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| exact")][1:]  # after the header
    names = ["exact Flat", "exact, torch matmul + topk", "exact, ours (index.flat.search)"]
    assert [r[1].strip() for r in rows] == names
    assert all(float(r[2]) == pytest.approx(1.0) for r in rows)  # all exact: recall 1
