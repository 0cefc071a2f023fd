"""clip-retrieval's back-end endpoints (``/indices-list``, ``/knn-service``, ``/metadata``) over our search.

Another project's contract, so they stay out of our OpenAPI schema (docs/clip-retrieval.md documents them). Searches
go through :func:`app.serving.query.run_search`, called in one place (:func:`_run_search`), with
the same auth dependency, limits and errors (``{detail, code}``) as ``/v1/search``. What
clip-retrieval accepts but we ignore (``use_mclip``, the safety and violence models, aesthetic
scoring) is validated and then ignored, as ``clip_back`` itself does when it was started without them.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np
import pydantic_core
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import sessionmaker

from app.api.auth import require_search
from app.api.bodies import read_capped
from app.api.clip_contract import (
    DEDUPE_THRESHOLD,
    KnnRequest,
    MetadataRequest,
    check_index_name,
    item_fields,
    knn_results,
    own_item_id,
    parse_body,
)
from app.api.deps import SearchStateDep, SessionFactoryDep, SettingsDep
from app.api.errors import ApiError
from app.api.uploads import decode_query_image
from app.config import Settings
from app.db import crud
from app.pipelines.fetch import FetchPolicy, FetchRefused, fetch
from app.serving.query import QueryInput, SearchRefused, item_image_url, run_search
from app.serving.schemas import SearchOptions, SearchResponse
from app.serving.state import SearchState
from crossmodal_kernel.modality import Modality
from index.dedupe import MAX_DEDUPE

router = APIRouter(tags=["clip-retrieval"], dependencies=[Depends(require_search)], include_in_schema=False)


def _run_search(
    state: SearchState,
    session_factory: sessionmaker,
    settings: Settings,
    query: QueryInput,
    target: Modality,
    k: int,
    dedupe: bool,
) -> tuple[SearchResponse, dict[str, float], str]:
    """The one place that calls our search (if ``run_search``'s signature changes, only this changes).

    Returns the response, its timings and what deduplication did: ``on``, ``off``, or ``unavailable``
    where the index cannot give back its vectors (IVF kinds): then the results are not deduplicated
    rather than refused, as the front end asks for deduplication by default.
    """
    plain = SearchOptions(target=target, k=k, mode="vector")  # clip-retrieval's search is by vector
    attempts = [(plain, "off")]
    if dedupe:
        deduped = SearchOptions(target=target, k=min(k, MAX_DEDUPE // 2), dedupe=DEDUPE_THRESHOLD, mode="vector")
        attempts = [(deduped, "on"), (plain, "unavailable")]
    for opts, outcome in attempts:
        try:
            response, timings = run_search(state, session_factory, settings, query, opts)
        except SearchRefused as e:
            if outcome == "on" and e.code == "dedupe_unsupported":
                continue
            raise
        return response, timings, outcome
    raise AssertionError("unreachable: the last attempt returns or raises")


def _json(body: object, headers: dict[str, str] | None = None) -> Response:
    # pydantic's encoder: a NaN deep in item metadata becomes null instead of failing the response
    return Response(content=pydantic_core.to_json(body), media_type="application/json", headers=headers)


def _body_limit(settings: Settings) -> int:
    # base64 grows an image by 4/3; a 65,536-long embedding_input in JSON needs about 1.5 MB
    return settings.max_upload_bytes * 4 // 3 + 2 * 2**20


@router.get("/indices-list")
async def indices_list(settings: SettingsDep) -> Response:
    """The index names clip-retrieval may search: our one logical index (``modality`` picks image or text)."""
    return _json([settings.clip_index_name])


@router.post("/knn-service")
async def knn_service(
    request: Request, state: SearchStateDep, session_factory: SessionFactoryDep, settings: SettingsDep
) -> Response:
    """clip_back's nearest-neighbour search: text, base64 image, image URL or a raw embedding."""
    body: KnnRequest = parse_body(await read_capped(request, _body_limit(settings)), KnnRequest)
    check_index_name(body.indice_name, settings)
    kind, query = await _query(request, body, state, settings, session_factory)
    k = _depth(state, settings, body)
    response, timings, deduped = await run_in_threadpool(
        _run_search, state, session_factory, settings, query, body.modality, k, bool(body.deduplicate)
    )
    request.app.state.metrics.observe_search(kind, body.modality.value, timings)
    headers = {"X-Crossmodal-Index": str(response.index.id), "X-Crossmodal-Deduplicated": deduped}
    return _json(knn_results(response.data, body.num_images, str(request.base_url)), headers)


def _depth(state: SearchState, settings: Settings, body: KnnRequest) -> int:
    """``num_result_ids`` (clip_back's default: ``num_images``), clamped to ``CROSSMODAL_MAX_K`` and the index
    size rather than refused: the front end always asks for 3,000 and shows what comes back."""
    k = min(body.num_result_ids or body.num_images, settings.max_k)
    loaded = state.snapshot.indexes.get(body.modality)
    if loaded is not None:
        k = min(k, loaded.index.ntotal)
    return max(k, 1)


async def _query(
    request: Request, body: KnnRequest, state: SearchState, settings: Settings, session_factory: sessionmaker
) -> tuple[str, QueryInput]:
    """The query as (metrics label, QueryInput), in clip_back's order: text, image, image_url, embedding."""
    text = (body.text or "").strip()
    if text:
        if len(text) > settings.max_query_chars:
            raise ApiError(
                422, "query_too_long", f"the text has {len(text)} characters; the limit is {settings.max_query_chars}"
            )
        return "text", QueryInput("text", text)
    if body.image is not None or body.image_url is not None:
        if body.image is not None:
            data = _b64(body.image)
        else:
            data = await _image_url_bytes(request, str(body.image_url), settings, session_factory)
        image = await run_in_threadpool(decode_query_image, data, settings.max_upload_bytes, settings.max_image_pixels)
        return "image", QueryInput("image", image)
    if body.embedding_input is not None:
        vector = _embedding(body.embedding_input, state, body.modality)
        return "embedding", QueryInput("vector", vector)
    raise ApiError(422, "no_query", "send one of `text`, `image` (base64), `image_url` or `embedding_input`")


def _b64(value: str) -> bytes:
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(422, "invalid_base64", "image is not valid base64") from e


async def _image_url_bytes(request: Request, url: str, settings: Settings, session_factory: sessionmaker) -> bytes:
    """Our own item image URLs (the front end's "similar images") are read from disk; others are fetched,
    only when ``CROSSMODAL_CLIP_IMAGE_URL_FETCH`` is on, and only where ``app.pipelines.fetch`` allows."""
    item_id = own_item_id(url, str(request.base_url))
    if item_id is not None:
        return await run_in_threadpool(_own_image, session_factory, item_id, settings.max_upload_bytes)
    if not settings.clip_image_url_fetch:
        raise ApiError(
            403,
            "image_url_fetch_disabled",
            "this server does not fetch image URLs (CROSSMODAL_CLIP_IMAGE_URL_FETCH is off): send the image "
            "itself, base64-encoded, as `image`",
        )
    policy = FetchPolicy(
        max_bytes=settings.max_upload_bytes,
        timeout=settings.fetch_timeout_seconds,
        allow_private=settings.fetch_allow_private,
    )
    try:
        return await run_in_threadpool(fetch, url, policy)
    except FetchRefused as e:
        raise ApiError(422, "image_url_refused", f"image_url was not fetched: {e}") from e


def _own_image(session_factory: sessionmaker, item_id: int, max_bytes: int) -> bytes:
    with session_factory() as session:
        item = crud.get_item(session, item_id)
        path = Path(item.image_path) if item is not None and item.image_path else None
    if path is None or not path.is_file():
        raise ApiError(422, "image_url_refused", f"image_url names item {item_id}, which has no image here")
    with open(path, "rb") as f:
        return f.read(max_bytes + 1)  # decode_query_image refuses anything longer


def _embedding(values: list[float], state: SearchState, target: Modality) -> np.ndarray:
    snap = state.snapshot
    loaded = snap.indexes.get(target)
    dim = loaded.index.dim if loaded is not None else getattr(snap.encoder, "embed_dim", None)
    if dim is not None and len(values) != dim:
        raise ApiError(
            422, "embedding_dim_mismatch", f"embedding_input has {len(values)} values; the model's vectors have {dim}"
        )
    vector = np.asarray(values, dtype=np.float32).reshape(1, -1)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ApiError(422, "invalid_embedding", "embedding_input must be a non-zero vector of finite numbers")
    return vector / norm


@router.post("/metadata")
async def metadata(request: Request, session_factory: SessionFactoryDep, settings: SettingsDep) -> Response:
    """``{ids, indice_name}`` -> ``[{id, metadata: {url, caption, ...}}]`` in the order asked; unknown or
    deleted ids are left out; ``ids: []`` is ``[]``."""
    body: MetadataRequest = parse_body(await read_capped(request, 2**20), MetadataRequest)
    check_index_name(body.indice_name, settings)
    if len(body.ids) > settings.max_k:
        raise ApiError(422, "too_many_ids", f"{len(body.ids)} ids; at most {settings.max_k} at once")
    if not body.ids:
        return _json([])
    rows = await run_in_threadpool(_hits, session_factory, body.ids)
    base = str(request.base_url)
    out = []
    for item_id in dict.fromkeys(body.ids):
        row = rows.get(item_id)
        if row is not None:
            image_url = item_image_url(row.id) if row.image_path else None
            out.append({"id": row.id, "metadata": item_fields(base, row.text, image_url, row.meta)})
    return _json(out)


def _hits(session_factory: sessionmaker, ids: list[int]) -> dict:
    with session_factory() as session:
        return crud.get_hits(session, ids)
