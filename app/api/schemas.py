"""HTTP request and response bodies, kept apart from the ORM rows."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.serving.schemas import Mode, SearchOptions

# Standard base64 (padded), optionally behind a data: URL prefix: what the schema promises we decode.
BASE64 = r"^(data:[^,]*,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class TextSearchRequest(SearchOptions):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"query": "a red circle", "target": "image", "k": 5}}
    )
    # At most CROSSMODAL_MAX_QUERY_CHARS (checked per request; the schema states it).
    query: str = Field(
        ..., min_length=1, pattern=r"\S", strict=True, description="The query text (not only white space)."
    )


class ImageSearchJSON(SearchOptions):
    # The schema offers only `vector`: the lexical and hybrid modes match words, and an image query
    # asking for them is answered 422 (mode_needs_text) by the query path.
    mode: Annotated[
        Mode | None, WithJsonSchema({"anyOf": [{"type": "string", "enum": ["vector"]}, {"type": "null"}]})
    ] = Field(None, description="Image queries rank by vector: `vector` or unset.")
    image_base64: str = Field(
        ...,
        min_length=1,
        pattern=BASE64,
        strict=True,
        description="The query image, base64-encoded (a data: URL prefix is allowed).",
    )


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
