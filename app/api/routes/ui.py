"""The web UI: static pages (no build step) calling the API from the browser: search at ``/``, admin at ``/admin``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.errors import ApiError

STATIC = Path(__file__).resolve().parents[2] / "static"
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "admin.js": "text/javascript",
    "admin.css": "text/css",
    "admin-charts.js": "text/javascript",
    "admin-job.js": "text/javascript",
    "admin-pages.js": "text/javascript",
    "vendor/uPlot.iife.min.js": "text/javascript",  # uPlot 1.6.32 (MIT, vendor/uPlot.LICENSE): the admin charts
    "vendor/uPlot.min.css": "text/css",
    "vendor/uPlot.LICENSE": "text/plain",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/admin")
async def admin() -> FileResponse:
    """Jobs and models; the admin key is asked for in the page and sent with each API call."""
    return FileResponse(STATIC / "admin.html", media_type="text/html")


@router.get("/ui/{name:path}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # a fixed list: no path from the request ever reaches the filesystem
        raise ApiError(404, "not_found", f"no UI asset {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name])
