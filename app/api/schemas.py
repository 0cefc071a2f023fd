"""HTTP request and response bodies, kept apart from the ORM rows."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.serving.filters import Filter
from crossmodal_kernel.modality import Modality

MAX_OFFSET = 100_000
# Standard base64 (padded), optionally behind a data: URL prefix: what the schema promises we decode.
BASE64 = r"^(data:[^,]*,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _whole(value: Any) -> Any:
    """JSON's integers: 5 and 5.0 (JSON Schema's "integer" admits both), never true, "5" or 5.5."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole)]
# Database ids stay below 2**53: exact in a JSON number (and in JavaScript).
MAX_DB_ID = 2**53 - 1
IdNumber = Annotated[int, Field(ge=1, le=MAX_DB_ID), BeforeValidator(_whole)]


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


class TextSearchRequest(SearchOptions):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"query": "a red circle", "target": "image", "k": 5}}
    )
    # At most CROSSMODAL_MAX_QUERY_CHARS (checked per request; the schema states it).
    query: str = Field(
        ..., min_length=1, pattern=r"\S", strict=True, description="The query text (not only white space)."
    )


class ImageSearchJSON(SearchOptions):
    image_base64: str = Field(
        ...,
        min_length=1,
        pattern=BASE64,
        strict=True,
        description="The query image, base64-encoded (a data: URL prefix is allowed).",
    )


class SearchResult(BaseModel):
    id: int
    external_id: str
    score: float
    text: str | None
    image_url: str | None
    metadata: dict[str, Any] | None


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
    model: ModelInfo
    index: IndexInfo
    took_ms: float


class ItemPublic(BaseModel):
    id: int
    external_id: str
    text: str | None
    image_url: str | None
    metadata: dict[str, Any] | None
    source: str | None


class ItemsPublic(BaseModel):
    data: list[ItemPublic]
    count: int


class ErrorBody(BaseModel):
    """Every error the API returns: what went wrong, for a person, and a stable code, for a program."""

    detail: str = Field(..., description="What went wrong and what to do about it.")
    code: str = Field(..., description="A stable machine-readable reason, e.g. `k_too_large`.")
    errors: list[dict[str, Any]] | None = Field(
        None, description="For request validation errors (422): every problem found, not only the first."
    )
