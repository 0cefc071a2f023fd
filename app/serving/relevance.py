"""Relevance at query time: each hit's calibrated probability of being relevant, and ``min_relevance``.

The active model's calibration (``models.calibration``, fitted on its evaluation pairs by
``app.pipelines.calibration``) comes with the snapshot, one map per query direction (``text->image``,
``image->text``, ``image->image``, ``text->text``). A hit's ``relevance`` is the map
(:class:`training.calibration.Calibration`) of the hit's cosine with the query and of the query's
level: the mean of its 10 best cosines over the live items of the searched index (whatever the
request's filter), which is what lets the cutoff move with the query. In every mode:

- ``vector``: the hit's score is its cosine. For one query the map rises with the cosine, so
  ``min_relevance`` is a cosine cutoff that joins ``min_score`` in the one candidate loop: paging,
  filters and ``dedupe`` behave exactly as with ``min_score``.
- ``hybrid`` and ``lexical``: the cosine of the hit's stored vector (a hit of the vector list keeps
  the score that list gave it), whatever its rank in the words' list. So relevance is the model's
  judgement even of a hit found by its words alone; lexical mode encodes the query for it when the
  model is calibrated. ``min_relevance`` drops hits before ``min_score``, ``dedupe`` and the page,
  like ``min_score``. An item the index has no vector for yet has no relevance, and
  ``min_relevance`` drops it.

Relevance is null, with the reason in the response's ``relevance`` block, when the model has no
calibration (none fitted yet, an evaluation set too small) or none for the query's direction (a
query given as a raw vector, a composite query); ``min_relevance`` is then refused (422
``relevance_unavailable``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.serving.hybrid import Ranked, Vectors
from app.serving.schemas import RelevanceInfo, SearchResponse
from training.calibration import Calibration

NOT_FITTED = (
    "the model has no relevance calibration yet (it is fitted when the model is bootstrapped, promoted or "
    "ingested into, on its evaluation pairs)"
)


@dataclass(frozen=True)
class Relevance:
    """What a snapshot knows about relevance: a map per direction, and why a direction has none."""

    maps: dict[str, Calibration] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    dataset: str | None = None
    fitted_at: str | None = None

    def mapping(self, kind: str, target: str) -> tuple[Calibration | None, str | None]:
        """The map for a ``kind`` query against the ``target`` index, or None and why not."""
        if kind not in ("text", "image"):
            return None, f"a {kind} query has no calibrated direction (calibrated: {self._fitted()})"
        direction = f"{kind}->{target}"
        found = self.maps.get(direction)
        if found is not None:
            return found, None
        why = self.reasons.get(direction) or self.reasons.get("*")
        return None, why or f"the calibration has no {direction} map (calibrated: {self._fitted()})"

    def _fitted(self) -> str:
        return ", ".join(sorted(self.maps)) or "none"

    def info(self, kind: str, target: str) -> RelevanceInfo:
        found, why = self.mapping(kind, target)
        return RelevanceInfo(
            calibrated=found is not None,
            reason=why,
            method=found.method if found is not None else None,
            fitted_on=self.dataset if found is not None else None,
            fitted_at=self.fitted_at if found is not None else None,
        )


def load_relevance(raw: dict[str, Any] | None) -> Relevance:
    """The snapshot's :class:`Relevance` from a ``models.calibration`` value (None: never fitted).
    A direction whose stored map does not load is reported, not raised: the model still serves."""
    if not raw:
        return Relevance(reasons={"*": NOT_FITTED})
    maps: dict[str, Calibration] = {}
    reasons = {str(k): str(v) for k, v in (raw.get("reasons") or {}).items()}
    for direction, fitted in (raw.get("directions") or {}).items():
        try:
            maps[direction] = Calibration.from_json(fitted["map"])
        except (KeyError, TypeError, ValueError) as e:
            reasons[direction] = f"the stored {direction} calibration is unreadable: {e}"
    if not maps and "*" not in reasons:
        reasons["*"] = f"no direction could be calibrated on {raw.get('dataset')}"
    return Relevance(maps, reasons, raw.get("method"), raw.get("dataset"), raw.get("fitted_at"))


def min_score_with(
    mapping: Calibration | None, level: float | None, min_score: float | None, min_relevance: float | None
) -> float | None:
    """Vector mode's one cutoff for the candidate loop: ``min_score`` and, a hair below it, the cosine at
    which this query (whose level is ``level``) reaches ``min_relevance`` (:func:`at_least` then
    drops the few hits within rounding of it)."""
    if mapping is None or level is None or min_relevance is None:
        return min_score
    cutoff = mapping.cutoff(min_relevance, level)
    if cutoff == -math.inf:
        return min_score
    return cutoff if min_score is None else max(min_score, cutoff)


def of_scores(mapping: Calibration | None, level: float | None, scores: Sequence[float]) -> list[float | None]:
    """The relevance of hits of these cosines, for a query whose level is ``level``."""
    if mapping is None or level is None:
        return [None] * len(scores)
    return [float(p) for p in mapping(np.asarray(scores, dtype=np.float64), level)]


def at_least(
    mapping: Calibration | None, level: float | None, hits: list[tuple[float, int]], min_relevance: float | None
) -> list[tuple[float, int]]:
    """Vector mode's (score, id) hits, best first, without those under ``min_relevance``: a prefix, since
    relevance rises with the score for one query."""
    if mapping is None or level is None or min_relevance is None:
        return hits
    keep = of_scores(mapping, level, [score for score, _ in hits])
    return [hit for hit, p in zip(hits, keep, strict=True) if p is not None and p >= min_relevance]


def cosines(ranked: Sequence[Ranked], xq: np.ndarray, vectors: Vectors) -> dict[int, float]:
    """Each hit's cosine with the query: the vector list's score where it has the hit, else the stored
    vector's (a hit the index has no vector for is left out)."""
    out = {r.id: r.vector.score for r in ranked if r.vector is not None}
    others = [r.id for r in ranked if r.vector is None]
    if others:
        found = vectors(others)
        q = np.asarray(xq, dtype=np.float32).reshape(-1)
        out |= {i: float(np.dot(v, q)) for i, v in found.items()}
    return out


@dataclass
class Judgement:
    """One lexical or hybrid request's relevance: the map, the query vector and its level, and what
    was computed so far."""

    mapping: Calibration | None
    xq: np.ndarray | None
    level: float | None
    vectors: Vectors
    min_relevance: float | None
    values: dict[int, float | None] = field(default_factory=dict)

    def note(self, ranked: Sequence[Ranked]) -> dict[int, float | None]:
        """The relevance of each of ``ranked`` (None for a hit without a stored vector, or no map)."""
        if self.mapping is not None and self.xq is not None and self.level is not None:
            todo = [r for r in ranked if r.id not in self.values]
            if todo:
                cos = cosines(todo, self.xq, self.vectors)
                ids = [r.id for r in todo if r.id in cos]
                found = of_scores(self.mapping, self.level, [cos[i] for i in ids])
                self.values |= {r.id: None for r in todo}
                self.values |= dict(zip(ids, found, strict=True))
        return {r.id: self.values.get(r.id) for r in ranked}

    def first(self, scored: Sequence[tuple[int, float]]) -> float | None:
        """The relevance of the first of a vector list's (id, cosine) hits: None without one, a map or a level."""
        if not scored or self.mapping is None or self.level is None:
            return None
        return of_scores(self.mapping, self.level, [scored[0][1]])[0]

    def keep(self, ranked: list[Ranked]) -> list[Ranked]:
        """``ranked`` without the hits under ``min_relevance`` (and those with no relevance), when it is set."""
        if self.min_relevance is None:
            return ranked
        found, floor = self.note(ranked), self.min_relevance
        return [r for r in ranked if (v := found[r.id]) is not None and v >= floor]


def attach(response: SearchResponse, values: dict[int, float | None], info: RelevanceInfo) -> SearchResponse:
    """``response`` with each hit's relevance and what it rests on."""
    for hit in response.data:
        hit.relevance = values.get(hit.id)
    response.relevance = info
    return response
