"""HTTP request and response bodies, kept apart from the ORM rows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crossmodal_kernel.modality import Modality


class SearchOptions(BaseModel):
    target: Modality = Field(Modality.IMAGE, description="Which modality to search: `image` or `text`.")
    # The cap is CROSSMODAL_MAX_K, checked per request; the OpenAPI schema states it (app.main).
    k: int = Field(10, ge=1, description="How many results to return (at most `CROSSMODAL_MAX_K`).")
    offset: int = Field(0, ge=0, le=100_000, description="Results to skip (pagination).")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="Drop results whose cosine score is below this.")


class TextSearchRequest(SearchOptions):
    model_config = ConfigDict(json_schema_extra={"example": {"query": "a red circle", "target": "image", "k": 5}})
    query: str = Field(..., description="The query text.")


class ImageSearchJSON(SearchOptions):
    image_base64: str = Field(..., description="The query image, base64-encoded (a data: URL prefix is allowed).")


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
