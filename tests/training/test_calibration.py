"""training.calibration: the fits against naive references, the exact cutoff, the judged hits, the fingerprint."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import calibration as cal
from training.eval_sets import EvalPairs


def naive_pav(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Isotonic regression the slow way: sort, then merge the first adjacent violating pair of blocks
    until none is left (quadratic). Returns the fitted value of every point, in the input order."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    blocks = []  # [sum, count, members]
    for i in range(len(xs)):  # equal x share a block from the start
        if blocks and xs[blocks[-1][2][-1]] == xs[i]:
            blocks[-1][0] += ys[i]
            blocks[-1][1] += 1
            blocks[-1][2].append(i)
        else:
            blocks.append([ys[i], 1, [i]])
    merged = True
    while merged:
        merged = False
        for j in range(len(blocks) - 1):
            if blocks[j][0] / blocks[j][1] > blocks[j + 1][0] / blocks[j + 1][1]:
                a, b = blocks[j], blocks.pop(j + 1)
                blocks[j] = [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
                merged = True
                break
    fitted = np.empty(len(x))
    for total, count, members in blocks:
        fitted[order[members]] = total / count
    return fitted


@pytest.mark.parametrize("seed", range(6))
def test_the_isotonic_fit_is_the_brute_force_pav_and_sklearns(seed):
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    x = np.round(rng.normal(size=n), 1)  # rounded: ties
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(float)
    fitted = cal.fit_isotonic(x, y)
    expected = naive_pav(x, y)
    np.testing.assert_allclose(fitted(x), expected, atol=1e-12)
    np.testing.assert_allclose(fitted(x), IsotonicRegression().fit(x, y).predict(x), atol=1e-12)
    grid = np.linspace(-5, 5, 1001)
    p = fitted(grid)
    assert np.all(np.diff(p) >= 0) and np.all((p >= 0) & (p <= 1))
    assert fitted(np.array([x.min() - 1]))[0] == 0.0  # below every judged score: nothing seen to be relevant


def test_a_step_takes_its_value_from_its_first_score_on():
    m = cal.Calibration("isotonic", (0.1, 0.3, 0.5), (0.0, 0.25, 0.9))
    np.testing.assert_allclose(m([0.0, 0.1, 0.2999, 0.3, 0.49, 0.5, 2.0]), [0, 0, 0, 0.25, 0.25, 0.9, 0.9])


@pytest.mark.parametrize("method", cal.METHODS)
@pytest.mark.parametrize("best", [0.0, 0.35, 0.8])
def test_relevance_rises_with_the_score_and_the_threshold_is_where_it_reaches_a_level(method, best):
    rng = np.random.default_rng(1)
    s = rng.normal(0.2, 0.1, 2000).astype(np.float32).astype(np.float64)
    q_best = s + rng.random(2000) * 0.2  # each hit's query's best score: at least its own
    y = rng.random(2000) < 1 / (1 + np.exp(-((s - 0.4 * q_best) - 0.1) * 30))
    m = cal.FITTERS[method](s, y, q_best)
    assert 0.2 < m.beta < 0.6  # the labels were drawn with beta 0.4
    probes = np.sort(np.concatenate([s, np.linspace(-1, 1, 4001)]))
    p = m(probes, best)
    assert np.all(np.diff(p) >= 0) and np.all((p >= 0) & (p <= 1))
    for r in [0.0, 1e-9, 0.05, 0.25, 0.5, 0.75, 0.99, 1.0, *p[::97].tolist()]:
        t, cut = m.threshold(r, best), m.cutoff(r, best)
        assert cut <= t
        assert np.all(probes[p >= r] >= cut), (r, cut)  # cutting there loses no hit the level keeps
        if r <= 0:
            assert t == -math.inf and np.all(p >= r)
        elif np.isinf(t):
            assert not (p >= r).any()
        else:  # clear of the threshold, the two agree
            clear = np.abs(probes - t) > 1e-6
            np.testing.assert_array_equal((p >= r)[clear], (probes >= t)[clear])


def test_beta_zero_is_a_map_of_the_cosine_alone():
    rng = np.random.default_rng(5)
    s = rng.normal(0.2, 0.1, 500)
    y = rng.random(500) < 1 / (1 + np.exp(-(s - 0.2) * 20))
    for method in cal.METHODS:
        m = cal.FITTERS[method](s, y)
        assert m.beta == 0.0
        np.testing.assert_array_equal(m(s, 0.0), m(s, 0.9))


def gradient_descent(X: np.ndarray, y: np.ndarray, steps: int, lr: float = 0.5) -> np.ndarray:
    """Plain gradient descent on the mean log loss against Platt's smoothed targets; intercept last."""
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.column_stack([X, np.ones(len(y))])
    theta = np.zeros(X.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(X @ theta)))
        theta -= lr * X.T @ (p - t) / len(y)
    return theta


def test_the_platt_fit_matches_plain_gradient_descent():
    rng = np.random.default_rng(2)
    s = rng.normal(0, 1, 400)
    y = rng.random(400) < 1 / (1 + np.exp(-(1.7 * s - 0.4)))
    fitted = cal.fit_platt(s, y)
    a, b = gradient_descent(s[:, None], y, steps=20_000)
    assert fitted.a == pytest.approx(a, rel=1e-3) and fitted.b == pytest.approx(b, abs=1e-3)
    assert 1.0 < fitted.a < 2.5  # near the slope the labels were drawn with


def test_the_per_query_platt_fit_matches_plain_gradient_descent():
    rng = np.random.default_rng(6)
    s = rng.normal(0, 1, 600)
    best = s + rng.random(600)
    y = rng.random(600) < 1 / (1 + np.exp(-(2.0 * s - 1.0 * best + 0.3)))
    fitted = cal.fit_platt(s, y, best)
    a, c, b = gradient_descent(np.column_stack([s, best]), y, steps=60_000)
    assert fitted.a == pytest.approx(a, rel=2e-3) and fitted.b == pytest.approx(b, abs=2e-3)
    assert fitted.beta == pytest.approx(-c / a, rel=5e-3)
    np.testing.assert_allclose(fitted(s, best), 1 / (1 + np.exp(-(a * s + c * best + b))), atol=1e-3)


def test_the_fit_holds_on_nearly_collinear_scores_like_sklearns():
    """A hit's cosine and its query's best are close to collinear; the fit must still converge (an
    undamped Newton step on raw columns ran off to coefficients of 1e12 on the emoji set)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    best = rng.normal(0.6, 0.05, 30_000)
    s = best - np.abs(rng.normal(0, 0.08, 30_000))
    y = rng.random(30_000) < 1 / (1 + np.exp(-(18 * s - 3 * best - 8)))
    fitted = cal.fit_platt(s, y, best)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))  # Platt's targets as two weighted rows each
    X = np.column_stack([s, best])
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(
        np.vstack([X, X]), np.r_[np.ones(len(y)), np.zeros(len(y))], sample_weight=np.r_[t, 1 - t]
    )
    a, c = reference.coef_[0]
    assert fitted.a == pytest.approx(a, rel=1e-3) and fitted.beta == pytest.approx(-c / a, rel=1e-2, abs=1e-3)
    assert fitted.b == pytest.approx(reference.intercept_[0], rel=1e-3)


def test_platt_refuses_a_relevance_that_falls_with_the_score():
    s = np.linspace(0, 1, 50)
    with pytest.raises(ValueError, match="does not rise"):
        cal.fit_platt(s, s < 0.5)


def test_a_map_survives_json_and_refuses_what_is_not_monotone():
    for m in (cal.Calibration("isotonic", (0.1, 0.2), (0.1, 0.7), beta=0.3), cal.Calibration("platt", a=9.0, b=-2.0)):
        assert cal.Calibration.from_json(m.as_json()) == m
    with pytest.raises(ValueError):
        cal.Calibration("isotonic", (0.2, 0.1), (0.1, 0.7))
    with pytest.raises(ValueError):
        cal.Calibration("isotonic", (0.1, 0.2), (0.7, 0.1))
    with pytest.raises(ValueError):
        cal.Calibration("platt", a=-1.0, b=0.0)
    with pytest.raises(ValueError):
        cal.Calibration("sigmoid")
    with pytest.raises(ValueError):
        cal.Calibration("platt", a=1.0, b=0.0, beta=math.nan)


def test_judge_labels_each_querys_top_hits_like_a_full_sort():
    rng = np.random.default_rng(3)
    pool = rng.normal(size=(60, 8)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = rng.normal(size=(12, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    pool_keys = [frozenset([i % 7]) for i in range(60)]
    query_keys = [frozenset([q % 7]) if q != 5 else frozenset(["nothing"]) for q in range(12)]
    itself = np.array([q * 3 if q % 2 else -1 for q in range(12)])  # odd queries are pool rows 3q
    judged = cal.judge(cal.Direction(queries, query_keys, pool, pool_keys, itself), depth=9, memory=5 * 60)
    assert judged.queries == 11  # query 5 has no relevant item in the pool: left out
    kept = [q for q in range(12) if q != 5]
    for row, q in enumerate(kept):
        sims = (pool @ queries[q]).astype(np.float64)
        candidates = [i for i in range(60) if i != itself[q]]
        top = sorted(candidates, key=lambda i: (-sims[i], i))[:9]
        mine = judged.query == row
        np.testing.assert_allclose(judged.scores[mine], sims[top], rtol=1e-6)
        assert judged.relevant[mine].tolist() == [i % 7 == q % 7 for i in top]
        assert np.allclose(judged.level[mine], judged.scores[mine][: cal.LEVEL_DEPTH].mean())
        assert judged.positives_per_query[row] == sum(i % 7 == q % 7 for i in candidates)


def test_calibration_quality_figures():
    rng = np.random.default_rng(4)
    p = rng.random(200_000)
    y = rng.random(200_000) < p  # calibrated by construction
    assert cal.expected_calibration_error(p, y) < 0.01
    assert cal.expected_calibration_error(np.full_like(p, 0.9), y) == pytest.approx(0.4, abs=0.01)
    bins = cal.reliability(p, y)
    assert sum(b["n"] for b in bins) == len(p) and all(abs(b["predicted"] - b["observed"]) < 0.02 for b in bins)
    assert cal.brier(np.ones(4), np.array([1, 1, 0, 0])) == 0.5


def test_fit_needs_enough_queries_and_both_kinds_of_hit():
    scores, query = np.linspace(0, 1, 30), np.arange(30) // 3
    level = np.add.reduceat(scores, np.arange(0, 30, 3))[query] / 3
    judged = cal.Judged(scores, np.arange(30) > 20, query, level, 10, np.ones(10, np.int64))
    mapping, stats = cal.fit(judged, "isotonic", adaptive=False)
    assert stats["queries"] == 10 and stats["relevant_hits"] == 9 and stats["ece"] == pytest.approx(0.0, abs=1e-9)
    assert mapping.beta == 0.0
    with pytest.raises(ValueError, match="at least"):
        cal.fit(cal.Judged(scores, judged.relevant, query, level, 3, judged.positives_per_query), "isotonic")
    with pytest.raises(ValueError, match="all relevant or all not"):
        cal.fit(cal.Judged(scores, np.zeros(30, bool), query, level, 10, judged.positives_per_query), "platt")


def test_the_fingerprint_follows_the_sets_content():
    a = EvalPairs(["x.png", "y.png"], ["a cat", "a dog"])
    assert cal.fingerprint(a) == cal.fingerprint(EvalPairs(["x.png", "y.png"], ["a cat", "a dog"]))
    assert cal.fingerprint(a) != cal.fingerprint(EvalPairs(["x.png", "y.png"], ["a cat", "a hog"]))
    assert cal.fingerprint(a) != cal.fingerprint(a, {"method": "platt"})
    assert cal.fingerprint(a) != cal.fingerprint(EvalPairs(["x.png", "y.png"], ["a cat", "a dog"], concepts=["c", "d"],
                                                           captions=[(), ()]))  # fmt: skip


def test_sample_queries_is_deterministic_and_bounded():
    assert cal.sample_queries(5, 10).tolist() == [0, 1, 2, 3, 4]
    picked = cal.sample_queries(100, 10)
    assert len(set(picked.tolist())) == 10 and picked.tolist() == cal.sample_queries(100, 10).tolist()
    assert math.isinf(cal.Calibration("isotonic", (0.1,), (0.2,)).threshold(0.5))
