"""Out-of-distribution ("text-like") queries for the synthetic mixture, calibrated on real caption queries.

A caption's embedding is not a noisy copy of its image's: in a dual encoder the two modalities
sit in different cones (the modality gap), and the images nearest a caption are less alike than
the images nearest an image. A graph index built over images suffers exactly from the second
fact: its greedy walk reaches one good image and finds the query's other answers are not that
image's neighbours. We model a text-like query as

    q = normalise(x + noise * eps + gap * u)

with ``x`` a fresh draw from the mixture (the image the caption describes), ``eps`` Gaussian noise
shaped by the mixture's spectrum, and ``u`` one fixed unit direction in that spectrum (the gap:
every query moves the same way, which favours the corpus vectors that lean that way, i.e. hubs).
``noise`` and ``gap`` are chosen on a grid so that two scale-free statistics of the neighbour
structure match those of real caption queries against real image embeddings, each as a ratio to
the same statistic for image queries of the same corpus:

* ``spread``: mean pairwise cosine among a query's 10 nearest corpus vectors (how alike its
  answers are);
* ``overlap``: the share of a query's 10 nearest corpus vectors that are among the 100 nearest of
  its nearest one (how well the corpus's own neighbourhoods cover its answers; what a graph walk
  relies on).

Absolute cosines are not matched: the real cones have a large mean component (norm ~0.8) that
the zero-mean mixture has not, so a caption's top-1 cosine (0.14 there) has no counterpart here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_index")

# Measured on 20,000 `builtin:lit-mini` image embeddings of the synthetic world with 300 caption and
# 300 image queries (2026-12-02); used when the real data is not cached. Recomputed when it is.
REAL_RATIOS = {"spread": 0.880, "overlap": 0.580}
NOISE_GRID = (0.5, 1.0, 1.5, 2.0)  # coarse grid; then the 8 half-steps around its best point
GAP_GRID = (0.0, 0.5, 1.0, 2.0)


def neighbour_stats(xb: np.ndarray, xq: np.ndarray, sample: int = 200) -> dict:
    """``spread`` and ``overlap`` (module docstring) of ``sample`` queries of ``xq`` against ``xb``."""
    from index import flat

    index = flat.build_exact(xb, np.arange(len(xb), dtype=np.int64))
    q = np.ascontiguousarray(xq[:sample], dtype=np.float32)
    D, I = flat.search(index, q, 10)
    spread = float(np.mean([(v @ v.T)[np.triu_indices(10, 1)].mean() for v in xb[I]]))
    _, N = flat.search(index, xb[I[:, 0]], 101)
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), N.tolist(), strict=True)]))
    return {"spread": spread, "overlap": overlap, "top1": float(D[:, 0].mean())}


def real_ratios(cache: Path) -> tuple[dict, str]:
    """The targets: text-query stats over image-query stats on the cached real data, else ``REAL_RATIOS``."""
    roots = sorted(cache.glob("real-builtin-lit-mini-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for root in roots[::-1]:
        if (root / "arrays.npz").exists() and (root / "texts.npz").exists():
            z, t = np.load(root / "arrays.npz"), np.load(root / "texts.npz")
            image, text = neighbour_stats(z["xb"], z["xq_eval"]), neighbour_stats(z["xb"], t["xq_text"])
            ratios = {k: text[k] / image[k] for k in ("spread", "overlap")}
            return ratios, f"measured now on {len(z['xb']):,} real image embeddings ({root.name})"
    return dict(REAL_RATIOS), "recorded on 20,000 real image embeddings (no real data cached)"


def spectrum(d: int) -> np.ndarray:
    spec = (np.arange(d) + 1.0) ** -0.5
    return (spec / np.sqrt((spec**2).sum())).astype(np.float32)


def text_like(x: np.ndarray, noise: float, gap: float, seed: int = 0) -> np.ndarray:
    """Text-like queries from mixture draws ``x`` (module docstring); the gap direction depends only on ``d``."""
    d = int(x.shape[1])  # an int, not Any: standard_normal(d) then types as an array, not a float
    spec = spectrum(d)
    u = np.random.default_rng(12345).standard_normal(d).astype(np.float32) * spec
    u /= np.linalg.norm(u)
    rng = np.random.default_rng(seed)
    q = x + noise * rng.standard_normal(x.shape, dtype=np.float32) * spec + gap * u
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)


def calibrate(xb: np.ndarray, x: np.ndarray, x_image: np.ndarray, targets: dict) -> dict:
    """The ``(noise, gap)`` whose text-like queries from ``x`` best match ``targets`` (squared log-ratio
    error): a coarse grid, then its best point's neighbours at half the step. ``x_image``: image-like
    queries, the denominator. Measured on the whole corpus: a slice of it would be sparser, and the
    statistics depend on density."""
    image = neighbour_stats(xb, x_image)
    grid: list[dict] = []

    def point(noise: float, gap: float) -> None:
        if noise <= 0 or gap < 0 or any(g["noise"] == noise and g["gap"] == gap for g in grid):
            return
        got = neighbour_stats(xb, text_like(x, noise, gap))
        ratios = {k: got[k] / image[k] for k in targets}
        err = sum(np.log(ratios[k] / targets[k]) ** 2 for k in targets)
        grid.append({"noise": noise, "gap": gap, "ratios": ratios, "error": float(err)})
        log.info("calibration noise %.2f gap %.2f: %s (error %.4f)", noise, gap, ratios, err)

    for noise in NOISE_GRID:
        for gap in GAP_GRID:
            point(noise, gap)
    best = min(grid, key=lambda g: g["error"])
    for dn in (-0.25, 0.0, 0.25):
        for dg in (-0.25, 0.0, 0.25):
            point(best["noise"] + dn, best["gap"] + dg)
    best = min(grid, key=lambda g: g["error"])
    return {"noise": best["noise"], "gap": best["gap"], "ratios": best["ratios"], "image": image, "grid": grid}
