"""``ingest`` jobs: a folder or manifest under an allowed root, or a list of image URLs."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from app.jobs.context import JobContext
from app.jobs.kinds import IngestParams, UrlItem
from app.pipelines.fetch import FetchPolicy, FetchRefused, fetch
from app.pipelines.ingest import ingest
from crossmodal_kernel import atomic
from crossmodal_kernel.images import ImageDecodeError, open_image

log = logging.getLogger(__name__)


def run(ctx: JobContext, params: dict) -> dict:
    p = IngestParams.model_validate(params)
    if p.source is not None:
        source = ctx.allowed_path(p.source, "source")
    else:
        assert p.items is not None
        source = fetch_items(ctx, p.items)
    report = ingest(source, ctx.settings, ctx.session_factory, progress=ctx.progress).as_dict()
    return {**report, **ctx.notes}


def fetch_items(ctx: JobContext, items: list[UrlItem]) -> Path:
    """Download each URL (refusing unsafe ones) into the job's folder; return a manifest of what arrived.

    A resumed job skips files it already has. A refused or undecodable URL is logged and counted.
    """
    folder = ctx.workdir / "downloads"
    folder.mkdir(exist_ok=True)
    policy = FetchPolicy(
        max_bytes=ctx.settings.max_upload_bytes,
        timeout=ctx.settings.fetch_timeout_seconds,
        allow_private=ctx.settings.fetch_allow_private,
    )
    rows, refused = [], {}
    for i, item in enumerate(items):
        path = folder / hashlib.sha1(item.url.encode()).hexdigest()
        if not path.exists():
            try:
                data = fetch(item.url, policy)
                open_image(data, ctx.settings.max_image_pixels)  # refuse what could not be indexed anyway
                atomic.write_bytes(path, data)
            except (FetchRefused, ImageDecodeError) as e:
                refused[item.url] = str(e)
                log.warning("skipping %s: %s", item.url, e)
        if path.exists():
            meta = {**(item.metadata or {}), "source_url": item.url}
            rows.append({**meta, "id": item.id or item.url, "image": str(path), "text": item.text})
        ctx.progress("fetch images", i + 1, len(items), unit="images")
    ctx.notes["refused_urls"] = refused
    manifest = ctx.workdir / "urls.jsonl"
    atomic.write_text(manifest, "".join(json.dumps(row) + "\n" for row in rows))
    return manifest
