"""clip-retrieval's request and response contract, kept apart from the routes that serve it.

clip-retrieval (``clip_retrieval/clip_back.py``, its ``ClipClient`` and its front end) posts a JSON
body, whatever its content type says, to ``/knn-service`` and ``/metadata`` and reads
``/indices-list``. This module parses and validates those bodies (leniently where clip-retrieval's
clients are: nulls for absent fields, the aesthetic fields as strings, unknown keys ignored) and
shapes results the way its front end reads them: keys with a null value are left out (the front
end shows any key that is present, and a null caption breaks it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from app.api.errors import ApiError, where
from app.config import Settings, comma_list
from app.values import IdNumber, WholeNumber
from crossmodal_kernel.modality import Modality

# clip_back's threshold: results whose (unit) vectors have an inner product of at least this are one image.
DEDUPE_THRESHOLD = 0.94
# Keys a result carries from the contract itself; item metadata of the same name is not copied over them.
RESERVED = frozenset({"id", "similarity", "url", "caption", "image", "image_path"})
ITEM_IMAGE_PATH = re.compile(r"^/v1/items/(\d{1,16})/image$")


def _optional_int(value: Any) -> Any:
    """clip_back reads ``int(aesthetic_score)`` where it is not ``""``: numbers and numeric strings."""
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError("must be an integer or a string holding one") from None
    return value


def _optional_float(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
        try:
            number = float(value)
        except ValueError:
            raise ValueError("must be a number or a string holding one") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    return value


Component = Annotated[float, Field(strict=True, allow_inf_nan=False)]
AestheticScore = Annotated[int, Field(strict=True, ge=0, le=9)]


class KnnRequest(BaseModel):
    """What ``ClipClient`` and the front end post to ``/knn-service``; null means absent, as for clip_back."""

    model_config = ConfigDict(extra="ignore")
    text: StrictStr | None = None
    image: StrictStr | None = None  # base64, a data: URL prefix allowed
    image_url: StrictStr | None = None
    embedding_input: list[Component] | None = Field(None, min_length=1, max_length=65_536)
    modality: Modality = Modality.IMAGE
    num_images: WholeNumber = Field(40, ge=1)
    num_result_ids: WholeNumber | None = Field(None, ge=1)
    indice_name: StrictStr | None = None
    deduplicate: StrictBool | None = None
    use_mclip: StrictBool | None = None
    use_safety_model: StrictBool | None = None
    use_violence_detector: StrictBool | None = None
    # clip_back's front end sends both as strings ("" for none); ClipClient as numbers
    aesthetic_score: Annotated[AestheticScore | None, BeforeValidator(_optional_int)] = None
    aesthetic_weight: Annotated[Component | None, BeforeValidator(_optional_float)] = None


class MetadataRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: list[IdNumber]
    indice_name: StrictStr | None = None


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """The body as JSON (whatever the content type), validated against ``model``; 422 otherwise."""
    try:
        payload = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(422, "invalid_json", f"the body is not valid JSON: {e}") from e
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_json", "the body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        first = e.errors()[0]
        raise ApiError(422, "invalid_request", f"{where(first['loc'])}: {first['msg']}") from e


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def check_index_name(name: str | None, settings: Settings) -> None:
    """No name (or ``""``, which the front end sends before it has the list) means the one index."""
    if name and name != settings.clip_index_name:
        raise ApiError(
            404, "unknown_index", f"no index named {name!r}; /indices-list names the one there is: "
            f"{settings.clip_index_name!r}"
        )  # fmt: skip


def own_item_id(url: str, base_url: str) -> int | None:
    """The item id when ``url`` is this service's own ``/v1/items/{id}/image`` (absolute or a path)."""
    u, b = urlsplit(url.strip()), urlsplit(base_url)
    if u.scheme or u.netloc:
        if (u.scheme.lower(), u.netloc.lower()) != (b.scheme.lower(), b.netloc.lower()):
            return None
    path, prefix = u.path, b.path.rstrip("/")
    if prefix:
        if not path.startswith(prefix + "/"):
            return None
        path = path[len(prefix) :]
    match = ITEM_IMAGE_PATH.match(path)
    return int(match.group(1)) if match and not u.query else None


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def item_fields(base_url: str, text: str | None, image_url: str | None, meta: dict | None) -> dict[str, Any]:
    """An item as clip-retrieval's metadata columns: ``url`` (absolute), ``caption``, then its metadata."""
    out = {k: v for k, v in (meta or {}).items() if k not in RESERVED and _present(v)}
    if image_url:
        out["url"] = base_url.rstrip("/") + image_url
    if text is not None:
        out["caption"] = text
    return out


def knn_results(hits: list, num_images: int, base_url: str) -> list[dict[str, Any]]:
    """clip_back's shape: the first ``num_images`` results with their fields, the rest ``{id, similarity}``."""
    results = []
    for rank, hit in enumerate(hits):
        entry = item_fields(base_url, hit.text, hit.image_url, hit.metadata) if rank < num_images else {}
        entry["id"] = hit.id
        entry["similarity"] = hit.score
        results.append(entry)
    return results


def cors_options(settings: Settings) -> dict[str, Any] | None:
    """Starlette ``CORSMiddleware`` arguments from ``CROSSMODAL_CORS_ALLOW_ORIGINS``, or None (no CORS)."""
    origins = comma_list(settings.cors_allow_origins)
    if not origins:
        return None
    return {
        "allow_origins": origins,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Authorization", "X-API-Key", "Content-Type"],
        "expose_headers": ["Server-Timing", "X-Crossmodal-Model", "X-Crossmodal-Index", "X-Crossmodal-Instance"],
        "max_age": 600,
    }
