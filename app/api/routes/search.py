"""Search endpoints: a text, an image or a composite query against the image or text index."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from app.api.auth import require_search
from app.api.bodies import read_capped
from app.api.deps import SearchStateDep, SessionFactoryDep, SettingsDep
from app.api.errors import ApiError, where
from app.api.schemas import CompositeSearchRequest, ErrorBody, ImagePart, ImageSearchJSON, ItemPart, TextSearchRequest
from app.api.uploads import decode_query_image
from app.config import Settings
from app.serving.composite import Part, check_count, run_composite
from app.serving.query import QueryInput, run_search
from app.serving.schemas import MAX_OFFSET, SearchOptions, SearchResponse
from crossmodal_kernel.modality import Modality

router = APIRouter(prefix="/search", tags=["search"], dependencies=[Depends(require_search)])

ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 413, 415, 422, 503)}


def as_json(request: Request, result: tuple[SearchResponse, dict[str, float]]) -> Response:
    """Serialise once (skipping FastAPI's second validation pass) and add a Server-Timing header."""
    model, timings = result
    server_timing = ", ".join(f"{name};dur={ms:.3f}" for name, ms in timings.items())
    headers = {
        "Server-Timing": server_timing,
        # Which pair answered (also in the body): a response never mixes one model with another's index.
        "X-Crossmodal-Model": str(model.model.id),
        "X-Crossmodal-Index": str(model.index.id),
        "X-Crossmodal-Instance": request.app.state.instance,
    }
    return Response(content=model.model_dump_json(), media_type="application/json", headers=headers)


@router.post("/text", response_model=SearchResponse, responses=ERRORS)
def search_text(
    request: Request,
    body: TextSearchRequest,
    state: SearchStateDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> Response:
    """Find images (``target=image``) or texts (``target=text``) for a text query."""
    query = body.query.strip()
    if not query:
        raise ApiError(422, "empty_query", "the query is empty")
    if len(query) > settings.max_query_chars:
        raise ApiError(
            422,
            "query_too_long",
            f"the query has {len(query)} characters; the limit is {settings.max_query_chars}",
        )
    result = run_search(state, session_factory, settings, QueryInput("text", query), body)
    request.app.state.metrics.observe_search("text", body.target, result[1])
    return as_json(request, result)


_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary", "minLength": 1},
                        "target": {"type": "string", "enum": [m.value for m in Modality], "default": "image"},
                        "k": {"type": "integer", "default": 10, "minimum": 1},
                        "offset": {"type": "integer", "default": 0, "minimum": 0, "maximum": MAX_OFFSET},
                        "min_score": {"type": "number", "minimum": -1, "maximum": 1},
                        "min_relevance": {"type": "number", "minimum": 0, "maximum": 1},
                        "dedupe": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        "mode": {"type": "string", "enum": ["vector"]},
                    },
                }
            },
            "application/json": {
                "schema": ImageSearchJSON.model_json_schema(ref_template="#/components/schemas/{model}")
            },
        },
    }
}


def _options(raw: dict, model=SearchOptions):
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        raise ApiError(422, "invalid_request", f"{where(first['loc'])}: {first['msg']}") from e


# A filter is a JSON object: it comes with the JSON body (`image_base64`), not as a form field.
NUMERIC_FIELDS = ("k", "offset", "min_score", "min_relevance", "dedupe")


def _form_options(form) -> dict:
    """Form fields are text: numbers are read as JSON numbers (so `5` is 5 and `true` is still not one)."""
    raw = {}
    for key, value in form.items():
        if key == "file":
            continue
        if key in NUMERIC_FIELDS and isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value
            value = parsed if isinstance(parsed, int | float) and not isinstance(parsed, bool) else value
        raw[key] = value
    return raw


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _body_limit(settings: Settings) -> int:
    """A body's byte limit: one upload, with base64's and multipart's framing on top."""
    return settings.max_upload_bytes * 4 // 3 + 64 * 1024


async def _json_object(request: Request, limit: int) -> dict:
    """The body as a JSON object, read up to ``limit`` bytes (413 beyond), else a 422."""
    raw = await read_capped(request, limit)
    try:
        payload = json.loads(raw)
    except ValueError as e:
        raise ApiError(422, "invalid_json", f"the body is not valid JSON: {e}") from e
    if not isinstance(payload, dict):
        raise ApiError(422, "invalid_json", "the body must be a JSON object")
    return payload


def _base64_bytes(b64: str) -> bytes:
    """The bytes of ``image_base64``, a data: URL's prefix dropped; a 422 when it is not base64."""
    if b64.startswith("data:") and "," in b64:
        b64 = b64.split(",", 1)[1]
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(422, "invalid_base64", "image_base64 is not valid base64") from e


async def _image_and_options(request: Request, settings: Settings) -> tuple[bytes, SearchOptions]:
    ctype = _content_type(request)
    body_limit = _body_limit(settings)
    if ctype == "application/json":
        opts = _options(await _json_object(request, body_limit), ImageSearchJSON)
        return _base64_bytes(opts.image_base64), opts
    if ctype == "multipart/form-data":
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > body_limit:
            raise ApiError(413, "body_too_large", f"the request body is {declared} bytes; the limit is {body_limit}")
        form = await request.form(max_files=1, max_fields=16)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "missing_file", "send the image in a multipart file field named `file`")
        data = await upload.read(settings.max_upload_bytes + 1)
        opts = _options(_form_options(form))
        return data, opts
    raise ApiError(415, "unsupported_media_type", "send multipart/form-data (field `file`) or JSON with `image_base64`")


@router.post("/image", response_model=SearchResponse, responses=ERRORS, openapi_extra=_IMAGE_BODY)
async def search_image(
    request: Request,
    state: SearchStateDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> Response:
    """Find images or texts for an image query: a multipart upload or base64 JSON."""
    data, opts = await _image_and_options(request, settings)
    image = await run_in_threadpool(decode_query_image, data, settings.max_upload_bytes, settings.max_image_pixels)
    result = await run_in_threadpool(run_search, state, session_factory, settings, QueryInput("image", image), opts)
    request.app.state.metrics.observe_search("image", opts.target, result[1])
    return as_json(request, result)


_COMPOSITE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": CompositeSearchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            }
        },
    }
}
COMPOSITE_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 404, 409, 413, 415, 422, 503)
}


def _base64_image(b64: str, settings: Settings):
    return decode_query_image(_base64_bytes(b64), settings.max_upload_bytes, settings.max_image_pixels)


def _composite_parts(body: CompositeSearchRequest, settings: Settings) -> list[Part]:
    """The request's parts for the query path: texts stripped, images decoded (each under the upload limits)."""
    parts = []
    for p in body.parts:
        if isinstance(p, ImagePart):
            parts.append(Part("image", _base64_image(p.image_base64, settings), p.weight))
        elif isinstance(p, ItemPart):
            parts.append(Part("item", p.item, p.weight, p.modality))
        else:
            parts.append(Part("text", p.text.strip(), p.weight))
    return parts


@router.post("/composite", response_model=SearchResponse, responses=COMPOSITE_ERRORS, openapi_extra=_COMPOSITE_BODY)
async def search_composite(
    request: Request,
    state: SearchStateDep,
    session_factory: SessionFactoryDep,
    settings: SettingsDep,
) -> Response:
    """Find images or texts for several weighted parts at once: texts, base64 images and stored items
    (weights may be negative: "more like this, less like that")."""
    if _content_type(request) != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the composite query as JSON (application/json)")
    # every image of the query together is held to about one upload's size
    body = _options(await _json_object(request, _body_limit(settings)), CompositeSearchRequest)
    check_count(len(body.parts), settings)
    parts = await run_in_threadpool(_composite_parts, body, settings)
    result = await run_in_threadpool(run_composite, state, session_factory, settings, parts, body)
    request.app.state.metrics.observe_search("composite", body.target, result[1])
    return as_json(request, result)
