"""What the query path takes and gives back: a search's options and its ranked response.

The HTTP routes (``app.api``) build their request bodies on :class:`SearchOptions` and return
:class:`SearchResponse` as it is; clip-retrieval's routes translate both.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.serving.filters import Filter
from app.values import WholeNumber
from crossmodal_kernel.modality import Modality

MAX_OFFSET = 100_000
Mode = Literal["vector", "lexical", "hybrid"]


class SearchOptions(BaseModel):
    """Strict where JSON is ambiguous: `true` is not a number, `"5"` not an integer, NaN not a score;
    an unknown key is an error (a misspelt option would otherwise be ignored without a word)."""

    model_config = ConfigDict(extra="forbid")
    target: Modality = Field(Modality.IMAGE, description="Which modality to search: `image` or `text`.")
    # The cap is CROSSMODAL_MAX_K, checked per request; the OpenAPI schema states it (app.main).
    k: WholeNumber = Field(10, ge=1, description="How many results to return (at most `CROSSMODAL_MAX_K`).")
    offset: WholeNumber = Field(0, ge=0, le=MAX_OFFSET, description="Results to skip (pagination).")
    min_score: float | None = Field(
        None, ge=-1.0, le=1.0, strict=True, allow_inf_nan=False, description="Drop results scoring below this."
    )
    filter: Filter | None = Field(
        None,
        description='Metadata conditions, all of which must hold: `{"color": "red", "year": {"gte": 2000}, '
        '"tag": {"in": ["a", "b"]}, "taken": {"lt": "2024-01-01"}}` (docs/api.md: Filters).',
    )
    dedupe: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        strict=True,
        allow_inf_nan=False,
        description="Drop a hit whose cosine similarity to a better hit is at least this (near-duplicates; "
        "0.95 is a good start).",
    )
    mode: Mode | None = Field(
        None,
        description="How a text query ranks: `vector` (embedding similarity), `lexical` (full-text match on the "
        "items' text, metadata values and file names) or `hybrid` (the two lists fused). Unset: "
        "`CROSSMODAL_SEARCH_MODE` for a text query, `vector` for an image. `min_score` bounds the hit's `score` in "
        "each mode: the cosine (vector), the lexical score in [0, 1) (lexical) or the fused score in [0, 1] "
        "(hybrid); docs/api.md: Search modes.",
    )
    min_relevance: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        strict=True,
        allow_inf_nan=False,
        description="Drop results whose `relevance` (the calibrated probability that the hit is relevant, 0 to 1) "
        "is below this; 0.5 keeps the hits more likely relevant than not. Needs a calibrated model "
        "(422 `relevance_unavailable` otherwise); docs/api.md: Relevance.",
    )


class RankPart(BaseModel):
    """Where one ranked list placed a hit: its 1-based rank in that filtered list, and its score there."""

    rank: int
    score: float


class HitParts(BaseModel):
    """A lexical or hybrid hit explained: each list's rank and score (null where that list did not have it)."""

    vector: RankPart | None = Field(None, description="The vector list: rank and cosine similarity.")
    lexical: RankPart | None = Field(None, description="The lexical list: rank and lexical score in [0, 1).")


class SearchResult(BaseModel):
    id: int
    external_id: str
    score: float = Field(
        ..., description="What the hit was ranked by: the cosine (vector), the lexical or the fused score (hybrid)."
    )
    text: str | None
    image_url: str | None
    metadata: dict[str, Any] | None
    parts: HitParts | None = Field(None, description="Lexical and hybrid modes: each list's rank and score.")
    relevance: float | None = Field(
        None,
        description="The calibrated probability (0 to 1) that this hit is relevant to the query, from its cosine with "
        "the query in every mode; null when the model has no calibration for this query (the response's "
        "`relevance.reason` says why).",
    )


class RelevanceInfo(BaseModel):
    """Whether the hits' `relevance` is calibrated for this query, and on what; or why it is null."""

    calibrated: bool
    reason: str | None = Field(None, description="Why every hit's `relevance` is null, when it is.")
    method: str | None = Field(None, description="`isotonic` or `platt`.")
    fitted_on: str | None = Field(None, description="The evaluation set the calibration was fitted on (`db`: the "
                                  "database's held-out split).")  # fmt: skip
    fitted_at: str | None = None


class ModelInfo(BaseModel):
    id: int | None
    spec: str


class IndexInfo(BaseModel):
    id: int
    modality: Modality
    ntotal: int


class SearchResponse(BaseModel):
    data: list[SearchResult]
    count: int
    mode: Mode = Field("vector", description="The mode that ranked these results.")
    relevance: RelevanceInfo | None = Field(None, description="What the hits' `relevance` rests on, or why it is null.")
    vector_weight: float | None = Field(
        None,
        description="Hybrid mode: the vector list's weight in this query's fusion (the lexical list's is 1 minus it): "
        "the configured weight moved with the calibrated relevance of the vector list's first hit (docs/api.md: "
        "Hybrid search). Null in the other modes.",
    )
    model: ModelInfo
    index: IndexInfo
    took_ms: float
