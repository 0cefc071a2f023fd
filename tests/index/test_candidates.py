import faiss
import numpy as np
import pytest

from index import flat
from index.builder import array_shards, build_index
from index.candidates import VectorsUnavailable, best_first, search
from index.factory import make_plan


def _data(n=3000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = rng.standard_normal((25, d)).astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    ids = rng.choice(10**9, size=n, replace=False).astype(np.int64)
    return xb, xq, ids


def _brute(xb, xq, ids, k, allowed):
    sims = xq @ xb[allowed].T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[allowed][order]


def _assert_matches(D, I, D_ref, I_ref):
    np.testing.assert_allclose(D, D_ref, atol=1e-5)
    for q in range(len(I)):  # ids may differ only where the scores tie
        for r in range(I.shape[1]):
            if I[q, r] != I_ref[q, r]:
                assert abs(D[q, r] - D_ref[q, r]) < 1e-6


def test_tombstones_and_filters_against_brute_force():
    xb, xq, ids = _data()
    index = flat.build_exact(xb, ids)
    dead = ids[::3]
    odd = lambda i: i % 2 == 1  # noqa: E731
    D, I = search(index, xq, 10, tombstones=dead, keep=odd)
    allowed = ~np.isin(ids, dead) & (ids % 2 == 1)
    _assert_matches(D, I, *_brute(xb, xq, ids, 10, allowed))
    assert not np.isin(I, dead).any() and (I % 2 == 1).all()


def test_a_selective_filter_forces_deeper_rounds_and_pads_when_exhausted():
    xb, xq, ids = _data(n=500)
    index = flat.build_exact(xb, ids)
    rare = set(ids[:7].tolist())
    D, I = search(index, xq, 10, keep=lambda i: np.isin(i, list(rare)))
    assert ((I >= 0).sum(axis=1) == 7).all() and (I[:, 7:] == -1).all() and np.isneginf(D[:, 7:]).all()
    allowed = np.isin(ids, list(rare))
    _assert_matches(D[:, :7], I[:, :7], *_brute(xb, xq, ids, 7, allowed))


@pytest.mark.parametrize("kind", ["hnsw", "ivf_flat"])
def test_approximate_indexes_keep_only_survivors(kind):
    xb, xq, ids = _data()
    index = build_index(array_shards(ids, xb), 16, make_plan(kind, len(ids), 16))
    faiss.ParameterSpace().set_index_parameter(index, "efSearch" if kind == "hnsw" else "nprobe", 4096)
    dead = ids[:1000]
    D, I = search(index, xq, 10, tombstones=dead)
    assert not np.isin(I, dead).any() and (I >= 0).all()
    D_ref, I_ref = _brute(xb, xq, ids, 10, ~np.isin(ids, dead))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, I_ref, strict=True)])
    assert recall > 0.9


def test_bad_arguments():
    xb, xq, ids = _data(n=10)
    with pytest.raises(ValueError):
        search(flat.build_exact(xb, ids), xq, 0)


def test_min_score_cuts_off_and_stops_going_deeper(monkeypatch):
    xb, xq, ids = _data(n=2000)
    index = flat.build_exact(xb, ids)
    D_all, _ = search(index, xq[:1], 50)
    cutoff = float(D_all[0, 4])  # exactly five results reach it
    depths, real = [], flat.search

    def counting(index, xq, k, allowed=None):
        depths.append(k)
        return real(index, xq, k, allowed)

    monkeypatch.setattr(flat, "search", counting)
    D, I = search(index, xq[:1], 50, min_score=cutoff)
    assert (I[0] >= 0).sum() == 5 and (D[0][:5] >= cutoff).all() and np.isneginf(D[0][5:]).all()
    assert depths == [75]  # the 75th score is already below the cutoff: no deeper round


def test_keep_sees_each_id_once_per_search_for_all_queries():
    xb, xq, ids = _data(n=400)
    index = flat.build_exact(xb, ids)
    asked = []

    def keep(batch):
        asked.append(batch.copy())
        return batch % 5 == 0

    D, I = search(index, xq, 10, keep=keep)
    seen = np.concatenate(asked)
    assert len(seen) == len(np.unique(seen))  # never asked twice about one id
    assert all(len(np.unique(a)) == len(a) for a in asked)
    assert len(asked) <= 4  # one call a round, not one a query
    allowed = ids % 5 == 0
    _assert_matches(D, I, *_brute(xb, xq, ids, 10, allowed))


@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IDMap2,HNSW16,Flat", "IDMap2,IVF16,Flat", "IDMap2,IVF16,SQ8"])
@pytest.mark.parametrize("fraction", [0.02, 0.5])
def test_allowed_ids_restrict_the_search_exactly_like_brute_force_over_them(factory, fraction):
    xb, xq, ids = _data()
    index = faiss.index_factory(xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(xb)
    index.add_with_ids(xb, ids)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = 16  # every list: what is left to test is the selector, not IVF recall
    rng = np.random.default_rng(1)
    mask = rng.random(len(ids)) < fraction
    allowed = np.sort(ids[mask])
    D, I = search(index, xq, 10, allowed=allowed)
    assert np.isin(I[I >= 0], allowed).all()  # every result passes, whatever the index
    D_ref, I_ref = _brute(xb, xq, ids, 10, mask)
    if factory.endswith(",SQ8"):  # 8-bit codes: near, not exact
        assert (D - D_ref).max() < 0.05
    elif fraction > 0.1 and "HNSW" in factory:  # too many to score exactly: the selector, approximate
        assert np.mean([len(set(a) & set(b)) for a, b in zip(I, I_ref, strict=True)]) >= 8
    else:
        _assert_matches(D, I, D_ref, I_ref)


def test_allowed_ids_the_index_does_not_hold_or_none_at_all():
    xb, xq, ids = _data(n=500)
    index = flat.build_exact(xb, ids)
    D, I = search(index, xq[:2], 5, allowed=np.array([], np.int64))
    assert (I == -1).all() and np.isneginf(D).all()
    hnsw = faiss.index_factory(xb.shape[1], "IDMap2,HNSW16,Flat", faiss.METRIC_INNER_PRODUCT)
    hnsw.add_with_ids(xb, ids)
    stranger = np.array([-5, ids[3], ids[7]])  # one id no index holds: the selector path still answers
    D, I = search(hnsw, xb[3:4], 5, allowed=stranger)
    assert set(I[0][I[0] >= 0].tolist()) == {ids[3], ids[7]} and I[0][0] == ids[3]


def test_dedupe_filters_and_the_cutoff_share_one_loop_and_match_a_naive_pass():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((300, 16)).astype(np.float32)
    xb = np.repeat(base, 4, axis=0) + 0.01 * rng.standard_normal((1200, 16)).astype(np.float32)  # groups of 4 copies
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    ids = np.arange(1200, dtype=np.int64) * 7 + 1
    xq = xb[rng.choice(1200, 10, replace=False)] + 0.05 * rng.standard_normal((10, 16)).astype(np.float32)
    index = flat.build_exact(xb, ids)
    asked: list[np.ndarray] = []

    def keep(i):
        asked.append(i)
        return i % 3 != 0

    D, I = search(index, xq, 12, keep=keep, min_score=0.0, dedupe=0.99)
    seen = np.concatenate(asked)
    assert len(seen) == len(np.unique(seen))  # every id judged once, across rounds and queries
    for q in range(len(xq)):
        sims = xb @ xq[q]
        order = np.lexsort((ids, -sims))
        ranked = [j for j in order if ids[j] % 3 != 0 and sims[j] >= 0.0]
        kept: list[int] = []
        for j in ranked:
            if all(float(xb[j] @ xb[m]) < 0.99 for m in kept):
                kept.append(j)
        expected = ids[kept[:12]]
        assert I[q, : len(expected)].tolist() == expected.tolist()


def test_dedupe_on_an_index_without_its_vectors_is_a_clear_error():
    xb, xq, ids = _data(n=200)
    index = build_index(array_shards(ids, xb), 16, make_plan("ivf_pq", len(ids), 16))
    with pytest.raises(VectorsUnavailable):
        search(index, xq, 5, dedupe=0.9)


def test_scores_within_float_noise_are_a_tie_ordered_by_id():
    d = np.array([0.3, 0.5, 0.5 + 6e-8, 0.5 + 1.2e-7, 0.49], dtype=np.float32)  # copies an ulp or two apart
    i = np.array([1, 9, 4, 7, 2])
    scores, ids = best_first(d, i)
    assert ids.tolist() == [4, 7, 9, 2, 1]
    assert scores.tolist() == sorted(scores.tolist(), key=lambda s: -round(s, 5))  # scores go with their ids
    assert dict(zip(ids.tolist(), scores.tolist(), strict=True)) == dict(zip(i.tolist(), d.tolist(), strict=True))
