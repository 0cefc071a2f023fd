"""Load shedding: past ``CROSSMODAL_MAX_INFLIGHT`` requests in flight, a fast 429 with ``Retry-After``.

Without a cap, a burst queues in the thread pool and then at the database pool, and the last
requests wait tens of seconds before failing. A client told "429, retry after 1 s" at once can
back off or go to another replica; Marqo answers the same way. Probes (``/healthz``, ``/readyz``)
and ``/metrics`` are never shed: an overloaded process is alive, and says so.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

EXEMPT = ("/healthz", "/readyz", "/metrics")


class ConcurrencyCap:
    """Pure ASGI middleware; the counter needs no lock: it only changes on the event loop."""

    def __init__(self, app: ASGIApp, limit: int, retry_after: int = 1):
        self.app, self.limit, self.retry_after = app, limit, retry_after
        self.inflight = 0
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            self.shed += 1
            await _too_many(send, self.limit, self.retry_after)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


async def _too_many(send: Send, limit: int, retry_after: int) -> None:
    body = json.dumps(
        {"detail": f"over {limit} requests in flight: retry after {retry_after} s", "code": "overloaded"}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
