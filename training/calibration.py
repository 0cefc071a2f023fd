"""Calibrated relevance: a map from a hit's cosine score to the probability that it is relevant.

Fitted per model version on its evaluation pairs (``app.pipelines.calibration`` says which pairs and
when) and applied per hit at query time (``app.serving.relevance``), so that ``relevance: 0.5`` means
the same for every query, and ``min_relevance`` is a cutoff a person can choose without knowing the
model's cosine scale. This module is numpy only: the API process imports it to apply a map.

**What is judged.** Each query of the evaluation set is ranked against the set's pool, and its
top ``depth`` hits are the examples: a hit is relevant when it shares a key with the query. The
keys follow the evaluation rules (``training.eval_sets``): with a ``concept`` column, text -> image
hits any drawing of the query's concept and image -> text any string naming or describing the
image's concept; without one, a hit is the paired item or any item with the very same caption.
Only the top of each ranking is judged, because that is where a cutoff acts: a relevant item at
rank 900 is not a hit anyone sees, and the pool's thousands of hopeless negatives would otherwise
outweigh the few near misses that decide where the cutoff falls.

**Per query.** The cosine that separates relevant from irrelevant moves from query to query (a
query worded unlike the captions scores lower everywhere), so a map of the cosine alone is one
fixed cutoff in disguise. The map reads ``s - beta * level`` instead, ``level`` being the mean of the
query's :data:`LEVEL_DEPTH` best cosines in the collection and ``beta`` fitted with it (a logistic fit
of relevance on both). For one query ``level`` is fixed, so relevance still rises with the hit's
cosine and a cutoff on relevance is a cutoff on the cosine, at a height that follows the query.
docs/design.md has the measurement (and why 10 best, not the single best).

**Methods.** ``platt``: logistic regression (Platt scaling) on the adjusted score, by Newton's
method. ``isotonic``: pool-adjacent-violators on it, a step function (each block's mean label from
its first adjusted score on).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from training.eval_sets import EvalPairs  # fingerprint's argument; the sets' directions: calibration_sets

Method = Literal["isotonic", "platt"]
METHODS: tuple[str, ...] = ("isotonic", "platt")
TEXT_TO_IMAGE, IMAGE_TO_TEXT = "text->image", "image->text"
IMAGE_TO_IMAGE, TEXT_TO_TEXT = "image->image", "text->text"
DIRECTIONS = (TEXT_TO_IMAGE, IMAGE_TO_TEXT, IMAGE_TO_IMAGE, TEXT_TO_TEXT)
DEPTH = 50  # hits judged per query: the top of the ranking, where cutoffs act
MAX_QUERIES = 2000  # per direction; a larger set is sampled (deterministically)
MIN_QUERIES = 10
VERSION = 1
CUTOFF_SLACK = 1e-9
LEVEL_DEPTH = 10  # a query's level: the mean of its this many best cosines (benchmarks/bench_calibration.py)


@dataclass(frozen=True)
class Calibration:
    """One direction's map from a hit's cosine ``s`` to P(relevant), given the query's ``level`` (the mean
    of its :data:`LEVEL_DEPTH` best cosines in the same collection): ``f(s - beta * level)``, where ``f``
    is a step function (``isotonic``: ``x`` the first adjusted score of each step, ``y`` its probability,
    both non-decreasing) or a logistic (``platt``: ``sigmoid(a * z + b)``, ``a > 0``). ``beta = 0`` is a
    map of the cosine alone.

    For one query ``level`` is fixed, so the map is non-decreasing in the hit's cosine: a cutoff on
    relevance is a cutoff on the cosine (:meth:`threshold`), wherever the query's scale sits."""

    method: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 0.0
    b: float = 0.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.beta):
            raise ValueError("beta must be finite")
        if self.method == "isotonic":
            x, y = np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)
            if not (len(x) == len(y) >= 1 and np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)):
                raise ValueError("an isotonic map needs increasing x and non-decreasing y of one length")
            if not (np.all(np.isfinite(x)) and np.all((y >= 0) & (y <= 1))):
                raise ValueError("an isotonic map needs finite x and y in [0, 1]")
        elif self.method == "platt":
            if not (math.isfinite(self.a) and math.isfinite(self.b) and self.a > 0):
                raise ValueError("a Platt map needs finite a > 0 and b")
        else:
            raise ValueError(f"unknown calibration method {self.method!r}: {' or '.join(METHODS)}")

    def adjusted(self, scores: np.ndarray | Sequence[float], level: float | np.ndarray) -> np.ndarray:
        """``s - beta * level``: the score the map reads (float64)."""
        return np.asarray(scores, dtype=np.float64) - self.beta * np.asarray(level, dtype=np.float64)

    def __call__(self, scores: np.ndarray | Sequence[float], level: float | np.ndarray = 0.0) -> np.ndarray:
        """P(relevant) for each score, float64 in [0, 1], non-decreasing in the score for a given ``level``."""
        z = self.adjusted(scores, level)
        if self.method == "platt":
            return _sigmoid(self.a * z + self.b)
        x, y = np.asarray(self.x), np.asarray(self.y)
        at = np.searchsorted(x, z, side="right") - 1  # the last step starting at or below z
        return np.where(at >= 0, y[np.maximum(at, 0)], 0.0)

    def threshold(self, relevance: float, level: float = 0.0) -> float:
        """The least adjusted score whose relevance is at least ``relevance``, as a cosine for a query whose
        level cosine is ``level``: ``self(s, level) >= relevance`` for every ``s`` above it (``inf`` when no
        score gets there, ``-inf`` when every score does). At the cutoff itself rounding may fall either
        way: callers that need the exact set cut a little below and keep ``self(s, level) >= relevance``."""
        if relevance <= 0:
            return -math.inf
        if self.method == "platt":
            if relevance >= 1:
                return math.inf
            z = (math.log(relevance / (1 - relevance)) - self.b) / self.a
        else:
            above = np.nonzero(np.asarray(self.y) >= relevance)[0]
            if not len(above):
                return math.inf
            z = float(self.x[above[0]])
        return z + self.beta * level

    def cutoff(self, relevance: float, level: float = 0.0) -> float:
        """A cosine at or below every ``s`` with ``self(s, level) >= relevance``, a hair under
        :meth:`threshold` (rounding, and a flat logistic near 0 or 1, cannot put a kept hit below it):
        cut the ranking here, then keep the hits whose relevance is at least ``relevance``."""
        if relevance <= CUTOFF_SLACK:
            return -math.inf
        return self.threshold(relevance - CUTOFF_SLACK, level) - CUTOFF_SLACK

    def as_json(self) -> dict[str, Any]:
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b, "beta": self.beta}
        return {"method": "isotonic", "x": list(self.x), "y": list(self.y), "beta": self.beta}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Calibration:
        beta = float(raw.get("beta", 0.0))
        if raw.get("method") == "platt":
            return cls("platt", a=float(raw["a"]), b=float(raw["b"]), beta=beta)
        return cls(str(raw.get("method")), tuple(map(float, raw["x"])), tuple(map(float, raw["y"])), beta=beta)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


# --- fitting -------------------------------------------------------------------------------------


def pav(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) least-squares regression of ``y`` on ``x`` by pool-adjacent-violators.

    Returns the blocks as ``(first x of each block, block mean)``, both increasing / non-decreasing;
    equal ``x`` values always share a block. Linear time after the sort."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    if not (len(x) == len(y) == len(w) >= 1):
        raise ValueError("need as many x, y and weights, at least one")
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    ux, first = np.unique(x, return_index=True)  # ties: one point of their summed weight
    wy = np.add.reduceat(w * y, first)
    ww = np.add.reduceat(w, first)
    starts: list[float] = []
    sums: list[float] = []
    weights: list[float] = []
    for xi, s, wi in zip(ux.tolist(), wy.tolist(), ww.tolist(), strict=True):
        starts.append(xi)
        sums.append(s)
        weights.append(wi)
        while len(sums) > 1 and sums[-2] / weights[-2] >= sums[-1] / weights[-1]:
            s_last, w_last = sums.pop(), weights.pop()
            starts.pop()
            sums[-1] += s_last
            weights[-1] += w_last
    means = np.asarray(sums) / np.asarray(weights)
    return np.asarray(starts), means


def _logistic(X: np.ndarray, labels: np.ndarray, iterations: int = 100, ridge: float = 1e-9) -> np.ndarray:
    """Logistic regression of ``labels`` (0/1) on the columns of ``X`` plus an intercept (last), against
    Platt's smoothed targets (``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)``) so that a separable set still
    has a finite fit. Newton's method with a backtracking line search on standardised columns (a hit's
    cosine and its query's level are close to collinear), a ``ridge`` times the rows' count to keep the
    Hessian invertible; the coefficients come back on the original scale."""
    y = np.asarray(labels, dtype=np.float64)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.asarray(X, dtype=np.float64)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale == 0] = 1.0
    Z = np.column_stack([(X - mean) / scale, np.ones(len(y))])
    penalty = ridge * len(y) * np.r_[np.ones(X.shape[1]), 0.0]

    def loss(theta: np.ndarray) -> float:
        z = Z @ theta  # -[t log p + (1 - t) log(1 - p)], written stably
        return float(np.sum(np.logaddexp(0, z) - t * z) + 0.5 * penalty @ theta**2)

    theta = np.zeros(Z.shape[1])
    theta[-1] = math.log((n_pos + 1) / (n_neg + 1))
    current = loss(theta)
    for _ in range(iterations):
        p = _sigmoid(Z @ theta)
        grad = Z.T @ (p - t) + penalty * theta
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(penalty + 1e-12)
        step = np.linalg.solve(hess, grad)
        rate = 1.0
        while rate > 1e-10 and loss(theta - rate * step) > current - 1e-4 * rate * float(grad @ step):
            rate /= 2
        theta = theta - rate * step
        current = loss(theta)
        if np.max(np.abs(rate * step)) < 1e-10:
            break
    weights = theta[:-1] / scale
    return np.r_[weights, theta[-1] - float(weights @ mean)]


def query_weight(scores: np.ndarray, labels: np.ndarray, level: np.ndarray) -> float:
    """``beta``: how much of the query's level to take off a hit's cosine, from the logistic fit of
    relevance on both (``a * s + c * level + b``: ``beta = -c / a``). Refused when relevance does not
    rise with the hit's own cosine."""
    theta = _logistic(np.column_stack([scores, level]), labels)
    if not theta[0] > 0:
        raise ValueError(f"relevance does not rise with the score on this set (slope {theta[0]:.3g})")
    return float(-theta[1] / theta[0])


def fit_isotonic(scores: np.ndarray, labels: np.ndarray, level: np.ndarray | None = None) -> Calibration:
    """The isotonic step map of ``labels`` (0/1) on the adjusted score ``s - beta * level`` (``beta`` from
    :func:`query_weight`; 0 without ``level``). Equal-mean neighbours are never apart after PAV (they
    would have pooled), so each step is a real change of probability."""
    beta = 0.0 if level is None else query_weight(scores, labels, level)
    z = np.asarray(scores, dtype=np.float64) - beta * (0.0 if level is None else np.asarray(level, dtype=np.float64))
    starts, means = pav(z, np.asarray(labels, dtype=np.float64))
    return Calibration("isotonic", tuple(starts.tolist()), tuple(np.clip(means, 0.0, 1.0).tolist()), beta=beta)


def fit_platt(scores: np.ndarray, labels: np.ndarray, level: np.ndarray | None = None) -> Calibration:
    """Logistic regression of ``labels`` on the score (Platt scaling) and, with ``level``, on the query's level
    score too: ``sigmoid(a * (s - beta * level) + b)``. Refused when it does not rise with the score."""
    if level is None:
        a, b = _logistic(np.asarray(scores, dtype=np.float64)[:, None], labels)
        beta = 0.0
    else:
        a, c, b = _logistic(np.column_stack([scores, level]), labels)
        beta = float(-c / a) if a > 0 else 0.0
    if not a > 0:
        raise ValueError(f"relevance does not rise with the score on this set (slope {a:.3g})")
    return Calibration("platt", a=float(a), b=float(b), beta=beta)


FITTERS: dict[str, Callable[..., Calibration]] = {"isotonic": fit_isotonic, "platt": fit_platt}


# --- the judged examples -------------------------------------------------------------------------


@dataclass
class Direction:
    """One query direction of an evaluation set: its queries and its pool, embedded, each row with its keys
    (a hit is relevant when it shares one with the query) and, where a query is itself in the pool
    (image -> image, text -> text), which pool row that is: never judged, as a new query is in no
    collection."""

    queries: np.ndarray
    query_keys: list[frozenset]
    pool: np.ndarray
    pool_keys: list[frozenset]
    itself: np.ndarray | None = None  # (queries,) the query's own pool row, -1 for none

    def pick(self, rows: np.ndarray) -> Direction:
        itself = None if self.itself is None else self.itself[rows]
        return Direction(self.queries[rows], [self.query_keys[i] for i in rows], self.pool, self.pool_keys, itself)


@dataclass
class Judged:
    """The top ``depth`` hits of every query: each hit's cosine, whether it is relevant, its query, and that
    query's level in the pool (the mean of its :data:`LEVEL_DEPTH` best cosines: what :class:`Calibration`
    adjusts by)."""

    scores: np.ndarray  # (n,) float64
    relevant: np.ndarray  # (n,) bool
    query: np.ndarray  # (n,) int: which query each hit belongs to
    level: np.ndarray  # (n,) float64: the level of the hit's query
    queries: int
    positives_per_query: np.ndarray  # (queries,) relevant items in the whole pool, judged or not

    def __len__(self) -> int:
        return len(self.scores)


def judge(direction: Direction, depth: int = DEPTH, memory: int = 2**25) -> Judged:
    """Rank the pool for each query (cosine, ties by pool order) and label its top ``depth``: relevant
    when the hit shares a key with the query. Queries with no relevant item in the pool are left out.
    Queries are scored in chunks of at most ``memory`` similarities."""
    keys: dict[Hashable, int] = {}
    p_of: dict[int, list[int]] = {}
    for p, ks in enumerate(direction.pool_keys):
        for k in ks:
            p_of.setdefault(keys.setdefault(k, len(keys)), []).append(p)
    itself = np.full(len(direction.queries), -1) if direction.itself is None else np.asarray(direction.itself)
    relevant_sets = []
    for ks, own in zip(direction.query_keys, itself.tolist(), strict=True):
        found = {p for k in ks if k in keys for p in p_of[keys[k]]}
        found.discard(own)
        relevant_sets.append(found)
    answerable = np.array([bool(r) for r in relevant_sets], dtype=bool)
    queries = np.asarray(direction.queries, dtype=np.float32)[answerable]
    itself = itself[answerable]
    relevant_sets = [r for r, a in zip(relevant_sets, answerable.tolist(), strict=True) if a]
    pool = np.asarray(direction.pool, dtype=np.float32)
    depth = min(depth, len(pool) - (1 if (itself >= 0).any() else 0))
    chunk = max(1, min(256, memory // max(len(pool), 1)))
    scores, labels, owner, level = [], [], [], []
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ pool.T
        rows = np.arange(len(sims))
        own = itself[start : start + chunk]
        sims[rows[own >= 0], own[own >= 0]] = -np.inf
        top = _top(sims, depth)
        for row in rows.tolist():
            q, idx = start + row, top[row]
            s = sims[row, idx].astype(np.float64)
            scores.append(s)
            labels.append(np.fromiter((int(i) in relevant_sets[q] for i in idx), dtype=bool, count=len(idx)))
            owner.append(np.full(len(idx), q, dtype=np.int64))
            level.append(np.full(len(idx), s[:LEVEL_DEPTH].mean()))
    if not scores:
        empty = np.zeros(0)
        return Judged(empty, empty.astype(bool), empty.astype(np.int64), empty, 0, empty.astype(np.int64))
    return Judged(np.concatenate(scores), np.concatenate(labels), np.concatenate(owner), np.concatenate(level),
                  len(queries), np.array([len(r) for r in relevant_sets], dtype=np.int64))  # fmt: skip


def _top(sims: np.ndarray, depth: int) -> np.ndarray:
    """Each row's ``depth`` best columns, best first, ties by column (a partition, then a sort of the few)."""
    if depth < sims.shape[1]:
        part = np.argpartition(-sims, depth - 1, axis=1)[:, :depth]
    else:
        part = np.tile(np.arange(sims.shape[1]), (len(sims), 1))
    vals = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def sample_queries(n: int, limit: int = MAX_QUERIES, seed: int = 0) -> np.ndarray:
    """Which of ``n`` queries to judge: all of them, or ``limit`` drawn without replacement (seeded)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


# --- how well it is calibrated -------------------------------------------------------------------


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of predicted probability: each bin's count, mean prediction and observed rate."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    at = np.minimum((p * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        inside = at == b
        n = int(inside.sum())
        out.append({"low": b / bins, "high": (b + 1) / bins, "n": n,
                    "predicted": float(p[inside].mean()) if n else float("nan"),
                    "observed": float(y[inside].mean()) if n else float("nan")})  # fmt: skip
    return out


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width bins of (bin share) * |mean prediction - observed rate|."""
    n = len(probabilities)
    if n == 0:
        return float("nan")
    return float(sum(b["n"] / n * abs(b["predicted"] - b["observed"]) for b in reliability(probabilities, labels, bins)
                     if b["n"]))  # fmt: skip


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((np.asarray(probabilities) - np.asarray(labels, dtype=np.float64)) ** 2))


def fit(judged: Judged, method: str, adaptive: bool = True) -> tuple[Calibration, dict[str, Any]]:
    """The map fitted on ``judged`` (``adaptive``: on the hit's cosine and its query's level; else on the
    cosine alone) and what it was fitted on: counts, and ECE and Brier score on the same hits."""
    if judged.queries < MIN_QUERIES:
        raise ValueError(f"{judged.queries} queries with a relevant item; calibration needs at least {MIN_QUERIES}")
    positives = int(judged.relevant.sum())
    if positives == 0 or positives == len(judged):
        raise ValueError("the judged hits are all relevant or all not: nothing to calibrate against")
    calibration = FITTERS[method](judged.scores, judged.relevant, judged.level if adaptive else None)
    p = calibration(judged.scores, judged.level)
    return calibration, {
        "queries": judged.queries,
        "hits": len(judged),
        "relevant_hits": positives,
        "ece": round(expected_calibration_error(p, judged.relevant), 6),
        "brier": round(brier(p, judged.relevant), 6),
    }


def fingerprint(pairs: EvalPairs, extra: Any = None) -> str:
    """A hash of what an evaluation set holds (image paths, texts, concepts, captions, in order) and of
    ``extra`` (the fitting's settings): a calibration is refitted when it changes."""
    h = hashlib.sha256()
    h.update(json.dumps({"version": VERSION, "extra": extra}, sort_keys=True, default=str).encode())
    captions = pairs.captions or [()] * len(pairs)
    concepts: list[str | None] = list(pairs.concepts) if pairs.concepts is not None else [None] * len(pairs)
    for row in zip(pairs.images, pairs.texts, concepts, captions, strict=True):
        h.update(json.dumps(row, default=list).encode())
        h.update(b"\n")
    return h.hexdigest()
