"""Lexical and hybrid ranking: fuse the vector and the lexical lists, then cut, de-duplicate, page.

Both lists arrive filtered (the request's metadata filter, live items of the target modality)
and ranked best first, ties by id. Each list keeps its own score: the vector list the cosine
similarity, the lexical list :func:`lexical_score` of the engine's score. Fusion
(``CROSSMODAL_HYBRID_FUSION``):

- ``rrf``, reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): a hit's fused score
  is ``sum_i w_i / (k + rank_i)`` over the lists that have it, ``w`` = (vector weight,
  1 - vector weight) and ``k`` = ``CROSSMODAL_HYBRID_RRF_K``. It is divided by the best score
  possible (rank 1 in both lists), so 1.0 means first in both and 0.5 first in one of two
  equally weighted lists.
- ``relative``: each list's scores min-max scaled to [0, 1] over the list (Weaviate's relative
  score fusion), then ``w * vector + (1 - w) * lexical``; a list that does not have the hit adds 0.

The vector weight ``w`` is set per query (:func:`vector_weight`): ``CROSSMODAL_HYBRID_VECTOR_WEIGHT``
moved by up to ``CROSSMODAL_HYBRID_RELEVANCE_SWING`` with the calibrated relevance of the vector
list's first hit, when the model has a calibration for the query's direction.

Every mode then applies the same rules to its ranked list: ``min_score`` drops hits whose
``score`` (the fused score in hybrid mode, the lexical score in lexical mode) is below it;
``dedupe`` drops a hit whose stored vector is at least that close to a better hit kept (a hit
with no vector in the index yet is never dropped, nor drops another); then the page is cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from index.candidates import VectorsUnavailable
from index.dedupe import near_duplicates

Fusion = Literal["rrf", "relative"]
Scored = Sequence[tuple[int, float]]  # (id, score), best first
Vectors = Callable[[list[int]], dict[int, np.ndarray]]  # ids -> the stored vectors of those it has


@dataclass(frozen=True)
class Part:
    """Where one list placed a hit: its 1-based rank in that (filtered) list and its score there."""

    rank: int
    score: float


@dataclass(frozen=True)
class Ranked:
    """One hit of a lexical or hybrid ranking: its score in that mode and each list's part."""

    id: int
    score: float
    vector: Part | None
    lexical: Part | None


def lexical_score(raw: float) -> float:
    """The engine's lexical score (BM25 on SQLite, ``ts_rank_cd`` on PostgreSQL, both >= 0, higher
    is better) mapped onto [0, 1): ``raw / (1 + raw)``, monotone, so ``min_score`` has a range."""
    raw = max(float(raw), 0.0)
    return raw / (1.0 + raw)


def _parts(hits: Scored) -> dict[int, Part]:
    return {item_id: Part(rank, float(score)) for rank, (item_id, score) in enumerate(hits, start=1)}


def _best_first(ranked: Iterable[Ranked]) -> list[Ranked]:
    return sorted(ranked, key=lambda r: (-r.score, r.id))


def lexical_only(lexical: Scored) -> list[Ranked]:
    """Lexical mode's ranking: the lexical list (engine scores) as it came, scores mapped."""
    return [
        Ranked(item_id, lexical_score(raw), None, Part(rank, lexical_score(raw)))
        for rank, (item_id, raw) in enumerate(lexical, start=1)
    ]


def vector_weight(base: float, swing: float, top_relevance: float | None) -> float:
    """One query's vector weight: ``base`` moved by up to ``swing`` with the calibrated relevance ``r`` of the
    vector list's first hit, ``base + swing * (2r - 1)`` clipped to [0, 1]; ``base`` when there is no relevance.
    A model sure of its best hit is trusted over the words, one unsure of it (a concept it never learnt) less."""
    if top_relevance is None:
        return base
    return min(1.0, max(0.0, base + swing * (2.0 * float(top_relevance) - 1.0)))


def fuse(vector: Scored, lexical: Scored, fusion: Fusion, rrf_k: float, vector_weight: float) -> list[Ranked]:
    """Hybrid mode's ranking of the union of ``vector`` (cosine) and ``lexical`` (engine scores)."""
    if not 0.0 <= vector_weight <= 1.0 or rrf_k < 0:
        raise ValueError(f"need 0 <= vector_weight <= 1 and rrf_k >= 0, got {vector_weight}, {rrf_k}")
    v = _parts(vector)
    lx = _parts([(item_id, lexical_score(raw)) for item_id, raw in lexical])
    from_v = _contributions(v, vector_weight, fusion, rrf_k)
    from_l = _contributions(lx, 1.0 - vector_weight, fusion, rrf_k)
    # rrf: divided by the best fused score possible (rank 1 in both), so that it lies in (0, 1]
    best = 1.0 / (rrf_k + 1.0) if fusion == "rrf" else 1.0
    return _best_first(
        Ranked(item_id, (from_v.get(item_id, 0.0) + from_l.get(item_id, 0.0)) / best, v.get(item_id), lx.get(item_id))
        for item_id in v.keys() | lx.keys()
    )


def _contributions(parts: dict[int, Part], weight: float, fusion: Fusion, rrf_k: float) -> dict[int, float]:
    """What one list adds to each of its hits' fused score."""
    if fusion == "rrf":
        return {item_id: weight / (rrf_k + p.rank) for item_id, p in parts.items()}
    if fusion == "relative":
        scale = _min_max(parts.values())
        return {item_id: weight * scale(p.score) for item_id, p in parts.items()}
    raise ValueError(f"unknown fusion {fusion!r}: rrf or relative")


def _min_max(parts: Iterable[Part]) -> Callable[[float], float]:
    scores = [p.score for p in parts]
    if not scores:
        return lambda s: 0.0
    low, high = min(scores), max(scores)
    if high <= low:
        return lambda s: 1.0
    return lambda s: (s - low) / (high - low)


def cut(ranked: list[Ranked], min_score: float | None, dedupe: float | None, vectors: Vectors) -> list[Ranked]:
    """``ranked`` without hits under ``min_score`` and, with ``dedupe``, without near-copies of a
    better hit kept (cosine of the stored vectors; hits without one are kept and compared with none)."""
    if min_score is not None:
        ranked = [r for r in ranked if r.score >= min_score]
    if dedupe is None or len(ranked) < 2:
        return ranked
    found = vectors([r.id for r in ranked])
    missing = [r.id for r in ranked if r.vector is not None and r.id not in found]
    if missing:  # the vector list found them in the index: it cannot give its vectors back
        raise VectorsUnavailable(f"this index cannot give back its vectors (item {missing[0]})")
    with_vector = [i for i, r in enumerate(ranked) if r.id in found]
    keep = np.ones(len(ranked), dtype=bool)
    if with_vector:
        mask = near_duplicates(np.stack([found[ranked[i].id] for i in with_vector]), dedupe)
        keep[np.asarray(with_vector)[~mask]] = False
    return [r for r, k in zip(ranked, keep, strict=True) if k]
