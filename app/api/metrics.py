"""Prometheus metrics for the API: requests, latency, search stages, and what is loaded.

Each app gets its own registry (tests and embedders may build several apps in one
process). Requests are labelled by route *template* (``/v1/items/{item_id}``), never the
raw path, so label cardinality stays bounded; a path no route matches counts as
``unmatched``. The model and index gauges are read from the search state's current
snapshot at scrape time, without reloading anything.

With several server processes (``uvicorn --workers N``) each process serves its own
numbers; scrape them one by one, or set ``PROMETHEUS_MULTIPROC_DIR`` as prometheus-client
documents for its multiprocess mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.serving.state import Snapshot

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _SnapshotCollector(Collector):
    """Gauges of the loaded model and indexes, computed from ``snapshot()`` on each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot | None]):
        self._snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        snap = self._snapshot()  # None before the app's startup has built its search state
        loaded = GaugeMetricFamily("crossmodal_model_loaded", "1 when a model is loaded and serving.")
        vectors = GaugeMetricFamily(
            "crossmodal_index_vectors", "Vectors in the active index, by modality.", labels=["modality"]
        )
        problems = GaugeMetricFamily("crossmodal_search_problems", "Problems /readyz would report from the state.")
        loaded.add_metric([], float(snap is not None and snap.encoder is not None))
        problems.add_metric([], float(len(snap.problems) if snap is not None else 0))
        for modality, li in sorted(snap.indexes.items() if snap is not None else ()):
            vectors.add_metric([modality], float(li.index.ntotal))
        yield from (loaded, vectors, problems)


class Metrics:
    """The app's collectors, plus the ASGI middleware that feeds the HTTP ones."""

    def __init__(self, snapshot: Callable[[], Snapshot | None] = lambda: None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "crossmodal_http_requests",
            "HTTP requests, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crossmodal_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "crossmodal_http_requests_in_flight", "Requests being handled now.", registry=self.registry
        )
        self.search_stage = Histogram(
            "crossmodal_search_stage_seconds",
            "Time a successful search spent in each stage (encode, search, hydrate), by query kind and target.",
            ["query", "target", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "crossmodal_search_batch_size",
            "Queries per micro-batch (encoded in one forward pass, searched in one product).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.query_cache = Counter(
            "crossmodal_query_cache_lookups",
            "Text query cache lookups, by result (hit, miss).",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(_SnapshotCollector(snapshot))

    def observe_search(self, query: str, target: str, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.search_stage.labels(query, target, stage).observe(ms / 1000)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_template(scope) -> str:
    """``/v1/items/{item_id}`` for a request to ``/v1/items/5``; ``unmatched`` when no route took it.

    The matched route's own ``path_format`` leaves out the prefixes of the routers it was
    included through, so the prefix is read off the request path: the route's format filled
    with the request's path parameters is the path's tail.
    """
    fmt = getattr(scope.get("route"), "path_format", None)
    if not fmt:
        return "unmatched"
    path = scope.get("path", "")
    try:
        tail = fmt.format(**scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return fmt
    return path[: len(path) - len(tail)] + fmt if path.endswith(tail) else fmt


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering, unlike BaseHTTPMiddleware)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response started surfaces as a 500
        started = time.perf_counter()

        async def send_wrapper(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            template = route_template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
