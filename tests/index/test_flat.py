import numpy as np
import pytest

from index import flat, store


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
    out = store.publish(index, tmp_path / "indexes" / "1", {"model_id": 3})
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == ["1"]  # no temp folder left
    loaded = store.load(out)
    assert loaded.ntotal == 50 and loaded.dim == 8
    assert loaded.meta["model_id"] == 3 and loaded.meta["factory"] == "IDMap2,Flat"
    np.testing.assert_array_equal(flat.search(loaded.index, xb[:5], 1)[1][:, 0], np.arange(100, 105))
    with pytest.raises(FileExistsError):
        store.publish(index, out, {})


def test_blas_path_agrees_with_faiss_in_every_chunking(monkeypatch, tmp_path):
    """The matmul path (exact IDMap2,Flat) returns FAISS's own answer, read back from disk too."""
    rng = np.random.default_rng(3)
    xb, xq = _unit(rng, 700, 16), _unit(rng, 33, 16)
    ids = rng.choice(10**9, size=700, replace=False).astype(np.int64)
    index = flat.build_exact(xb, ids)
    assert flat._exact_parts(index) is not None
    D_ref, I_ref = index.search(xq, 10)  # FAISS itself
    # corpus blocks of k rows, 21 rows, 212 rows, all; queries 256 a product, or 5
    for chunk_floats, query_block in ((10, 256), (700, 256), (7000, 5), (flat.SIM_CHUNK_FLOATS, 256)):
        monkeypatch.setattr(flat, "SIM_CHUNK_FLOATS", chunk_floats)
        monkeypatch.setattr(flat, "QUERY_BLOCK", query_block)
        D, I = flat.search(index, xq, 10)
        np.testing.assert_allclose(D, D_ref, atol=1e-6)
        assert (I == I_ref).mean() > 0.99  # may differ only on exact ties
    store.publish(index, tmp_path / "1", {})
    loaded = store.load(tmp_path / "1").index
    np.testing.assert_allclose(flat.search(loaded, xq, 10)[0], D_ref, atol=1e-6)
    D, I = flat.search(index, xq[0], 700)  # k == n: everything, best first
    assert sorted(I[0]) == sorted(ids) and np.all(np.diff(D[0]) <= 1e-7)


def test_other_indexes_and_empty_ones_go_through_faiss():
    import faiss

    rng = np.random.default_rng(4)
    assert flat._exact_parts(flat.build_exact(np.zeros((0, 8), np.float32), np.zeros(0, np.int64))) is None
    l2 = faiss.IndexIDMap2(faiss.IndexFlatL2(8))
    l2.add_with_ids(_unit(rng, 10, 8), np.arange(10))
    assert flat._exact_parts(l2) is None
    hnsw = faiss.index_factory(8, "IDMap2,HNSW8,Flat", faiss.METRIC_INNER_PRODUCT)
    hnsw.add_with_ids(_unit(rng, 50, 8), np.arange(50))
    assert flat._exact_parts(hnsw) is None
    assert flat.search(hnsw, _unit(rng, 2, 8), 5)[1].shape == (2, 5)
    with pytest.raises(ValueError, match="dimension"):
        flat.search(flat.build_exact(_unit(rng, 5, 8), np.arange(5)), _unit(rng, 1, 4), 2)


@pytest.mark.parametrize("kind", ["ivf_fs_refine", "hnsw", "hnsw_pca", "hnsw_split"])
def test_a_refined_index_filters_through_its_base_index(monkeypatch, kind):
    """IndexRefine searches its base index (IVF fast-scan, HNSW on SQ8 codes, or on PCA codes through a
    PCA stage) with nested parameters: the id selector must reach them translated to rows (IDMap2 translates
    only the outer ones), and results stay inside ``allowed``; a split index passes each part its own ids."""
    from index import builder, factory, tune

    rng = np.random.default_rng(5)
    d = 64  # wide enough for a PCA stage (factory.PCA_MIN_D)
    xb, xq = _unit(rng, 3000, d), _unit(rng, 20, d)
    ids = np.arange(3000, dtype=np.int64) * 3 + 1
    plan = factory.make_plan(kind, 3000, d, parts=2)
    assert ("PCA32," in plan.factory) == (kind in ("hnsw_pca", "hnsw_split"))
    index = builder.build_index(builder.array_shards(ids, xb), d, plan)
    # every list, or a walk as wide as the corpus, all of it re-ranked: the filtered search is exact
    tune.set_search_param(index, plan.search_param, factory.ivf_nlist(3000) if kind == "ivf_fs_refine" else 3000)
    tune.set_refine_factor(index, 300)
    monkeypatch.setattr(flat, "EXACT_SUBSET_MAX", 0)  # past the reconstruct path, to the selector
    allowed = ids[::2]
    _, I = flat.search(index, xq, 10, allowed)
    truth = allowed[np.argsort(-(xq @ xb[::2].T), axis=1)[:, :10]]
    assert np.isin(I, allowed).all()
    assert np.mean([len(set(a) & set(b)) for a, b in zip(I.tolist(), truth.tolist(), strict=True)]) >= 9.5
