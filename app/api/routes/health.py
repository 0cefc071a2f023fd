"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import SearchStateDep, SessionFactoryDep
from app.db.session import head_revision

router = APIRouter(tags=["health"])
HEAD = head_revision()


@router.get("/healthz")
async def healthz() -> dict:
    """The process is alive (it says nothing about the DB, model or index)."""
    return {"status": "ok"}


def _database_problem(session_factory) -> str | None:
    """None when the database answers with the schema this code expects and its tables are readable.

    ``SELECT 1`` alone would pass on a truncated or replaced SQLite file: the question has to touch
    the data.
    """
    try:
        with session_factory() as session:
            revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
            session.execute(text("SELECT id FROM items LIMIT 1")).all()
    except Exception as e:
        return f"database unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if revision != HEAD:
        return f"database schema is at {revision or 'no revision'}, this code expects {HEAD}"
    return None


def _readiness(state, session_factory) -> tuple[bool, dict]:
    problems: list[str] = []
    database = _database_problem(session_factory)
    if database:
        problems.append(database)
    snap = state.snapshot
    problems.extend(snap.problems)
    if snap.encoder is None and not snap.problems:
        problems.append("model not loaded")
    body = {
        "status": "ready" if not problems else "not ready",
        "model": {"id": snap.model_id, "spec": snap.model_spec, "loaded": snap.encoder is not None},
        "indexes": {m: {"id": li.id, "ntotal": li.index.ntotal} for m, li in snap.indexes.items()},
        "problems": problems,
        "warnings": list(snap.warnings),
    }
    return not problems, body


@router.get("/readyz")
async def readyz(request: Request, state: SearchStateDep, session_factory: SessionFactoryDep) -> JSONResponse:
    """200 when the DB answers and the model and at least one index are loaded; else 503 with reasons."""
    ok, body = await run_in_threadpool(_readiness, state, session_factory)
    body["instance"] = request.app.state.instance
    return JSONResponse(body, status_code=200 if ok else 503)
