"""Admin: API keys over HTTP (the first admin key comes from `crossmodal keys create`)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.admin_schemas import KeyCreate, KeyCreated, KeyPublic, KeysPublic
from app.api.auth import AdminDep, create_key, list_keys, revoke_key
from app.api.deps import DbId, SessionDep
from app.api.errors import ApiError
from app.api.submit import ADMIN_ERRORS

router = APIRouter(prefix="/keys", tags=["admin: keys"])


@router.get("", response_model=KeysPublic, responses=ADMIN_ERRORS)
def get_keys(_key: AdminDep, session: SessionDep) -> KeysPublic:
    rows = list_keys(session)
    return KeysPublic(data=[KeyPublic.model_validate(r) for r in rows], count=len(rows))


@router.post("", status_code=201, response_model=KeyCreated, responses=ADMIN_ERRORS)
def new_key(body: KeyCreate, _key: AdminDep, session: SessionDep) -> KeyCreated:
    """Create a key; the response is the only place its secret appears."""
    try:
        row, key = create_key(session, body.name, body.role)
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from e
    session.commit()
    return KeyCreated.model_validate({**KeyPublic.model_validate(row).model_dump(), "key": key})


@router.delete("/{key_id:int}", response_model=KeyPublic, responses=ADMIN_ERRORS)
def delete_key(key_id: DbId, _key: AdminDep, session: SessionDep) -> KeyPublic:
    """Revoke a key: every API process refuses it from its next request."""
    try:
        row = revoke_key(session, str(key_id))
    except LookupError as e:
        raise ApiError(404, "key_not_found", f"no API key with id {key_id}") from e
    session.commit()
    return KeyPublic.model_validate(row)
