"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import SearchStateDep, SessionFactoryDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is alive (it says nothing about the DB, model or index)."""
    return {"status": "ok"}


def _readiness(state, session_factory) -> tuple[bool, dict]:
    problems: list[str] = []
    try:
        with session_factory() as session:
            session.execute(text("SELECT 1"))
    except Exception as e:
        problems.append(f"database unreachable: {type(e).__name__}: {e}")
    snap = state.snapshot
    problems.extend(snap.problems)
    if snap.encoder is None and not snap.problems:
        problems.append("model not loaded")
    body = {
        "status": "ready" if not problems else "not ready",
        "model": {"id": snap.model_id, "spec": snap.model_spec, "loaded": snap.encoder is not None},
        "indexes": {m: {"id": li.id, "ntotal": li.index.ntotal} for m, li in snap.indexes.items()},
        "problems": problems,
    }
    return not problems, body


@router.get("/readyz")
async def readyz(request: Request, state: SearchStateDep, session_factory: SessionFactoryDep) -> JSONResponse:
    """200 when the DB answers and the model and at least one index are loaded; else 503 with reasons."""
    ok, body = await run_in_threadpool(_readiness, state, session_factory)
    body["instance"] = request.app.state.instance
    return JSONResponse(body, status_code=200 if ok else 503)
