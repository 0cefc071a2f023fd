import numpy as np
import pytest

from index import flat


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_index_matches_brute_force_with_db_ids():
    rng = np.random.default_rng(0)
    xb, xq = _unit(rng, 500, 16), _unit(rng, 20, 16)
    ids = rng.choice(10**9, size=500, replace=False).astype(np.int64)
    D, I = flat.search(flat.build_exact(xb, ids), xq, 10)
    sims = xq @ xb.T
    order = np.argsort(-sims, axis=1)[:, :10]
    np.testing.assert_allclose(D, np.take_along_axis(sims, order, axis=1), rtol=1e-5, atol=1e-5)
    # ids may differ only where scores tie
    for q in range(len(xq)):
        for rank in range(10):
            if I[q, rank] != ids[order[q, rank]]:
                assert abs(D[q, rank] - sims[q, order[q, rank]]) < 1e-6


def test_k_larger_than_index_is_clamped():
    rng = np.random.default_rng(1)
    index = flat.build_exact(_unit(rng, 3, 8), np.array([7, 8, 9]))
    D, I = flat.search(index, _unit(rng, 1, 8), 50)
    assert I.shape == (1, 3) and set(I[0]) == {7, 8, 9}


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        flat.build_exact(np.zeros((3, 4), np.float32), np.arange(2))


def test_publish_is_atomic_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    xb = _unit(rng, 50, 8)
    index = flat.build_exact(xb, np.arange(100, 150))
    out = flat.publish(index, tmp_path / "indexes" / "1", {"model_id": 3})
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == ["1"]  # no temp folder left
    loaded = flat.load(out)
    assert loaded.ntotal == 50 and loaded.dim == 8
    assert loaded.meta["model_id"] == 3 and loaded.meta["factory"] == "IDMap2,Flat"
    np.testing.assert_array_equal(flat.search(loaded.index, xb[:5], 1)[1][:, 0], np.arange(100, 105))
    with pytest.raises(FileExistsError):
        flat.publish(index, out, {})
