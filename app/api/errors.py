"""One error shape for the whole API, ``{"detail", "code"}``, whatever raised it.

``ApiError`` is ours; FastAPI's validation errors, Starlette's HTTP errors (405, an unknown route,
a malformed multipart body) and a body nested too deeply to parse are put in the same shape here.
An error never echoes the offending input: a NaN or an infinite number there would make the error
itself unencodable (a 500), and an echoed secret is a leaked secret.
"""

from __future__ import annotations

import logging
import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DatabaseError,
    DataError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or ({"WWW-Authenticate": "Bearer"} if status == 401 else None)


def error_response(status: int, code: str, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, "code": code, **extra}, headers=headers)


async def api_error_handler(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _plain(error: dict) -> dict:
    """A validation error without its input and context (which may hold values JSON cannot carry)."""
    out = {"loc": [p if isinstance(p, int | str) else str(p) for p in error.get("loc", ())], "msg": error["msg"]}
    out["type"] = error.get("type", "value_error")
    return out


def where(loc) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


async def validation_error_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, in the same shape as every other error, with every problem listed in ``errors``."""
    errors = [_plain(e) for e in exc.errors()] or [{"loc": [], "msg": "invalid request", "type": "value_error"}]
    first = errors[0]
    return error_response(422, "invalid_request", f"{where(first['loc'])}: {first['msg']}", errors=errors)


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:  # every method the path has, not only those of the first route that matched
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(exc.status_code, code, detail, headers or None)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the schema lists for this path (routers nest, so the route table is not flat).

    A path parameter the schema types as an integer matches digits only: `/v1/admin/items/delete`
    is not `/v1/admin/items/{item_id}`.
    """
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        for method, operation in operations.items():
            if re.match(_template_pattern(template, operation), request.url.path):
                methods.add(method.upper())
    if not methods:  # a route kept out of the schema (clip-retrieval's contract): ask the router, method by method
        methods = {m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL
                                              for r in request.app.routes)}  # fmt: skip
    return sorted(methods)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _template_pattern(template: str, operation: dict) -> str:
    integers = {
        p["name"]
        for p in operation.get("parameters", [])
        if p.get("in") == "path" and p.get("schema", {}).get("type") == "integer"
    }
    parts = re.split(r"(\{[^}]+\})", template)
    return (
        "^"
        + "".join(
            ("[0-9]+" if part[1:-1] in integers else "[^/]+") if part.startswith("{") else re.escape(part)
            for part in parts
        )
        + "$"
    )


async def recursion_error_handler(_request: Request, _exc: RecursionError) -> JSONResponse:
    return error_response(400, "body_too_deep", "the JSON body is nested too deeply to parse")


# The database is down, restarting, replaced, or every connection is busy: the request may succeed later.
# (DatabaseError covers a malformed or truncated SQLite file; the errors of our own making are re-raised.)
DATABASE_UNAVAILABLE = (DatabaseError, InterfaceError, DisconnectionError, SQLAlchemyTimeoutError)
OUR_BUGS = (IntegrityError, ProgrammingError, DataError)


async def database_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, OUR_BUGS):
        raise exc  # a 500, with its traceback: a constraint or a statement of ours is wrong
    log.warning("database unavailable: %s", type(exc).__name__, exc_info=exc)
    return error_response(
        503, "database_unavailable", "the database is unavailable; retry shortly", {"Retry-After": "2"}
    )
