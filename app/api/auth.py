"""API keys: created once and shown once, stored as a hash, checked against the database on every request.

A key reads ``cmk_<prefix>_<secret>``. The prefix finds the row and is safe to show in listings;
only the SHA-256 of the whole key is stored (the secret is 256 random bits, so a slow password
hash would add nothing), compared in constant time. A revoked key is refused by every process at
its next request: nothing is cached. Keys travel in ``Authorization: Bearer <key>`` or
``X-API-Key``, and never appear in logs or error bodies.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.api.errors import ApiError
from app.db.models import ApiKey, KeyRole, utcnow

PREFIX = "cmk_"
LAST_USED_EVERY = timedelta(minutes=1)  # how stale last_used_at may get (one write a minute, not a request)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, role: str) -> tuple[ApiKey, str]:
    """A new key; returns the row and the key itself, which is not stored and cannot be shown again."""
    if role not in {r.value for r in KeyRole}:
        raise ValueError(f"role must be one of {[r.value for r in KeyRole]}, got {role!r}")
    if not name.strip():
        raise ValueError("a key needs a name (who or what uses it)")
    prefix = secrets.token_hex(6)
    key = f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(name=name.strip(), prefix=prefix, secret_hash=_hash(key), role=role)
    session.add(row)
    session.flush()
    return row, key


def revoke_key(session: Session, id_or_prefix: str) -> ApiKey:
    condition = ApiKey.prefix == id_or_prefix
    if id_or_prefix.isdigit():
        condition = or_(condition, ApiKey.id == int(id_or_prefix))
    row = session.scalars(select(ApiKey).where(condition)).first()
    if row is None:
        raise LookupError(f"no API key {id_or_prefix!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def verify(session: Session, key: str) -> ApiKey | None:
    """The live key row ``key`` belongs to, or None (unknown, malformed or revoked)."""
    if not key.startswith(PREFIX) or key.count("_") < 2:
        return None
    prefix = key[len(PREFIX) :].split("_", 1)[0]
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_hash, _hash(key)):
        return None
    now = utcnow()
    if row.last_used_at is None or row.last_used_at < now - LAST_USED_EVERY:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == row.id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_EVERY))
            .values(last_used_at=now)
        )
        session.commit()
    return row


def key_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return request.headers.get("x-api-key") or None


def _authenticate(request: Request, roles: set[str]) -> ApiKey:
    key = key_from(request)
    if key is None:
        raise ApiError(401, "missing_api_key", "this endpoint needs an API key: `Authorization: Bearer <key>`")
    with request.app.state.session_factory() as session:
        row = verify(session, key)
        if row is None:
            raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked")
        session.expunge(row)
    if row.role not in roles:
        raise ApiError(403, "forbidden", f"this endpoint needs a key with role {' or '.join(sorted(roles))}")
    return row


def require_admin(request: Request) -> ApiKey:
    return _authenticate(request, {KeyRole.ADMIN})


async def require_search(request: Request) -> ApiKey | None:
    """Search is open unless ``CROSSMODAL_SEARCH_AUTH=key``; then a search or admin key is needed.

    ``async`` so that open search costs no thread hop (FastAPI runs a sync dependency in its pool,
    and this one runs on every search); the key lookup, a DB query, goes to the pool itself.
    """
    if request.app.state.settings.search_auth == "open":
        return None
    return await run_in_threadpool(_authenticate, request, {KeyRole.SEARCH, KeyRole.ADMIN})


AdminDep = Annotated[ApiKey, Depends(require_admin)]
SearchKeyDep = Annotated[ApiKey | None, Depends(require_search)]
