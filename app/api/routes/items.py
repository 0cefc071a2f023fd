"""Browse the ingested items and fetch their images."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from app.api.auth import require_search
from app.api.deps import DbId, Limit, Offset, SessionDep
from app.api.errors import ApiError
from app.api.schemas import ErrorBody, ItemPublic, ItemsPublic
from app.db import crud
from app.db.models import Item
from app.serving.query import item_image_url

router = APIRouter(prefix="/items", tags=["items"], dependencies=[Depends(require_search)])


def to_public(item: Item) -> ItemPublic:
    return ItemPublic(
        id=item.id,
        external_id=item.external_id,
        text=item.text,
        image_url=item_image_url(item.id) if item.image_path else None,
        metadata=item.meta,
        source=item.source,
    )


@router.get("", response_model=ItemsPublic)
def list_items(
    session: SessionDep,
    offset: Offset = 0,
    limit: Limit = 50,
) -> ItemsPublic:
    items, count = crud.list_items(session, offset, limit)
    return ItemsPublic(data=[to_public(i) for i in items], count=count)


@router.get("/{item_id}", response_model=ItemPublic, responses={404: {"model": ErrorBody}})
def get_item(item_id: DbId, session: SessionDep) -> ItemPublic:
    item = crud.get_item(session, item_id)
    if item is None:
        raise ApiError(404, "item_not_found", f"no item with id {item_id}")
    return to_public(item)


@router.get(
    "/{item_id}/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}, 404: {"model": ErrorBody}},
)
def get_item_image(item_id: DbId, session: SessionDep) -> FileResponse:
    item = crud.get_item(session, item_id)
    if item is None:
        raise ApiError(404, "item_not_found", f"no item with id {item_id}")
    if not item.image_path:
        raise ApiError(404, "no_image", f"item {item_id} has no image")
    path = Path(item.image_path)
    if not path.is_file():
        raise ApiError(404, "image_file_missing", f"the image file of item {item_id} is gone from disk")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type)
