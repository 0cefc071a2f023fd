"""The FastAPI application: ``create_app()`` wires settings, DB, search state and routes."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from app.api.clip_contract import cors_options
from app.api.errors import (
    DATABASE_UNAVAILABLE,
    ApiError,
    api_error_handler,
    database_error_handler,
    http_error_handler,
    recursion_error_handler,
    validation_error_handler,
)
from app.api.metrics import Metrics, MetricsMiddleware
from app.api.openapi import finish_openapi
from app.api.overload import ConcurrencyCap
from app.api.routes import admin_jobs, admin_keys, admin_models, clip_compat, health, items, search, ui
from app.config import Settings, get_settings
from app.db.session import ensure_schema_current, make_session_factory, service_engine
from app.serving.query import SearchRefused
from app.serving.state import SearchState

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, encoder_factory=None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = service_engine(settings)
        ensure_schema_current(engine)
        # The thread pool and the DB pool are sized together (CROSSMODAL_THREADS): a thread never waits
        # long for a connection, and CROSSMODAL_MAX_INFLIGHT sheds load before either queue grows.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        # Measured (docs/benchmarks.md, batching): at 5 ms, concurrency 32 took 2-3x longer per batch.
        sys.setswitchinterval(settings.gil_switch_ms / 1000)
        app.state.settings = settings
        app.state.session_factory = make_session_factory(engine)
        # This lifespan stops the state it started, even if another lifespan of the same app object
        # (a test client beside the server) replaced app.state.search meanwhile.
        app.state.search = search = SearchState(settings, app.state.session_factory, encoder_factory)
        if search.batcher is not None:
            search.batcher.on_batch = app.state.metrics.batch_size.observe
        search.query_cache.on_lookup = lambda hit: app.state.metrics.query_cache.labels("hit" if hit else "miss").inc()
        # Load the model and indexes before taking traffic (failures show in /readyz), then keep them fresh.
        await run_in_threadpool(search.start)
        yield
        await run_in_threadpool(search.stop)
        engine.dispose()

    app = FastAPI(
        title="crossmodal",
        version="0.1.0",
        summary="Search images and texts against each other in one embedding space.",
        lifespan=lifespan,
    )
    # Which process answered: replicas behind one port are told apart by it (/readyz, search headers).
    app.state.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    # Starlette types every handler as taking any Exception, not the class it is registered for:
    # the ignores below are that typing gap (each handler gets only its own exception class).
    app.add_exception_handler(ApiError, api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(SearchRefused, api_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RecursionError, recursion_error_handler)  # type: ignore[arg-type]
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, database_error_handler)
    v1 = APIRouter(prefix="/v1")
    v1.include_router(search.router)
    v1.include_router(items.router)
    admin = APIRouter(prefix="/admin")
    admin.include_router(admin_jobs.router)
    admin.include_router(admin_models.router)
    admin.include_router(admin_keys.router)
    v1.include_router(admin)
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(ui.router)
    app.include_router(clip_compat.router)  # clip-retrieval's contract, at the root as clip_back serves it
    # Before startup, so that handlers can always reach it; the snapshot is read at scrape time.
    app.state.metrics = Metrics(lambda: getattr(getattr(app.state, "search", None), "snapshot", None))
    app.add_middleware(ConcurrencyCap, limit=settings.max_inflight)
    cors = cors_options(settings)
    if cors is not None:  # outside the cap: a preflight is never refused, and a 429 carries CORS headers
        app.add_middleware(CORSMiddleware, **cors)
    if settings.metrics_enabled:  # outermost: it counts the 429s too
        app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            body, content_type = app.state.metrics.render()
            return Response(content=body, media_type=content_type)

    finish_openapi(app, settings)
    return app
