"""The FastAPI application: ``create_app()`` wires settings, DB, search state and routes."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.routes import admin_jobs, admin_keys, admin_models, health, items, search, ui
from app.config import Settings, get_settings
from app.db.session import ensure_schema_current, make_engine, make_session_factory
from app.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    recursion_error_handler,
    validation_error_handler,
)
from app.metrics import Metrics, MetricsMiddleware
from app.openapi import finish_openapi
from app.search import SearchState

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, encoder_factory=None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.resolved_database_url)
        ensure_schema_current(engine)
        app.state.settings = settings
        app.state.session_factory = make_session_factory(engine)
        app.state.search = SearchState(settings, app.state.session_factory, encoder_factory)
        # Load the model and indexes before taking traffic (failures show in /readyz), then keep them fresh.
        await run_in_threadpool(app.state.search.start)
        yield
        await run_in_threadpool(app.state.search.stop)
        engine.dispose()

    app = FastAPI(
        title="crossmodal",
        version="0.1.0",
        summary="Search images and texts against each other in one embedding space.",
        lifespan=lifespan,
    )
    # Which process answered: replicas behind one port are told apart by it (/readyz, search headers).
    app.state.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RecursionError, recursion_error_handler)
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
    # Before startup, so that handlers can always reach it; the snapshot is read at scrape time.
    app.state.metrics = Metrics(lambda: getattr(getattr(app.state, "search", None), "snapshot", None))
    if settings.metrics_enabled:
        app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            body, content_type = app.state.metrics.render()
            return Response(content=body, media_type=content_type)

    finish_openapi(app, settings)
    return app
