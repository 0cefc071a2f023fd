"""HTTP request and response bodies, kept apart from the ORM rows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, WithJsonSchema

from app.serving.schemas import Mode, SearchOptions
from app.values import IdNumber
from crossmodal_kernel.modality import Modality

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


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = Field(
        1.0,
        ge=-100.0,
        le=100.0,
        strict=True,
        allow_inf_nan=False,
        description="How much this part counts; negative: results like it rank lower. Only the weights' ratios "
        "and signs matter.",
    )


class TextPart(_Part):
    # At most CROSSMODAL_MAX_QUERY_CHARS (checked per request; the schema states it).
    text: str = Field(..., min_length=1, pattern=r"\S", strict=True, description="A text (not only white space).")


class ImagePart(_Part):
    image_base64: str = Field(
        ...,
        min_length=1,
        pattern=BASE64,
        strict=True,
        description="An image, base64-encoded (data: URL prefix allowed).",
    )


class ItemPart(_Part):
    item: IdNumber = Field(..., description="An item's `id`: the part is the item's own stored vector.")
    modality: Modality | None = Field(
        None,
        description="Which of the item's vectors: `image` or `text`. Unset: the searched index's (`target`), else "
        "the other index's.",
    )


def _part_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((key for key in ("text", "image_base64", "item") if key in value), None)
    return next((key for key in ("text", "image_base64", "item") if hasattr(value, key)), None)


QueryPart = Annotated[
    Annotated[TextPart, Tag("text")] | Annotated[ImagePart, Tag("image_base64")] | Annotated[ItemPart, Tag("item")],
    Discriminator(
        _part_kind,
        custom_error_type="invalid_part",
        custom_error_message="a part is one of {text, weight}, {image_base64, weight} or {item, weight}",
    ),
]


class CompositeSearchRequest(SearchOptions):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "parts": [
                    {"text": "red car", "weight": 1.0},
                    {"text": "blue", "weight": -0.5},
                    {"item": 17, "weight": 0.7},
                ],
                "target": "image",
                "k": 5,
            }
        },
    )
    # At most CROSSMODAL_MAX_QUERY_PARTS parts (checked per request; the schema states it).
    parts: list[QueryPart] = Field(
        ...,
        min_length=1,
        description="What to search for: texts, base64 images and stored items, each with a weight (default 1; "
        "negative pushes its likes down), combined as one normalised weighted sum (docs/api.md: Composite queries).",
    )
    mode: Literal["vector", "hybrid"] | None = Field(
        None,
        description="`vector` (unset: the combined vector ranks) or `hybrid` (that ranking fused with the lexical "
        "match of the parts' positive texts).",
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
