"""Where a search request's time goes outside the search itself, boundary by boundary (diagnostic).

uvicorn runs the app in a thread of this process; an ASGI wrapper stamps the request's arrival,
its response start and its end, and a wrapped ``run_search`` its own start and end. An httpx
client sends text searches one at a time over loopback. Medians over ``--queries``:

    client → app | app → run_search | run_search | → response start | body sent | app → client

    .venv/bin/python benchmarks/probe_http_overhead.py [--items 10000] [--queries 300]

(The client and the server share this process's GIL, as they do not in bench_search; the
boundaries are what this probe is for, bench_search's ratio is the figure.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

import app.api.routes.search as search_route  # noqa: E402
from app.config import Settings  # noqa: E402
from benchmarks.bench_search import _free_port, _queries, populate  # noqa: E402
from crossmodal_kernel.encoder import Encoder  # noqa: E402

STAGES = ("client → app", "app → run_search", "run_search", "→ response start", "body sent", "app → client")


def _instrumented(app, marks: dict):
    real = search_route.run_search

    def run_search(*args, **kwargs):
        marks["rs0"] = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            marks["rs1"] = time.perf_counter()

    search_route.run_search = run_search

    async def outer(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        marks["in"] = time.perf_counter()

        async def stamped(message):
            if message["type"] == "http.response.start":
                marks["start"] = time.perf_counter()
            await send(message)

        await app(scope, receive, stamped)
        marks["out"] = time.perf_counter()

    return outer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--model", default="builtin:lit-mini")
    args = ap.parse_args()
    import uvicorn

    from app.main import create_app

    tmp = Path(tempfile.mkdtemp(prefix="probe-http-"))
    populate(Settings(data_dir=tmp, model_spec=args.model), args.items, Encoder.from_spec(args.model, device="cpu"))
    marks: dict[str, float] = {}
    app = _instrumented(create_app(Settings(data_dir=tmp, model_spec=args.model, query_cache_size=0)), marks)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    queries, rows = _queries(args.queries + 30, seed=5), []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            client.post("/v1/search/text", json={"query": q, "k": 10}).raise_for_status()
            t1 = time.perf_counter()
            m = marks
            if i >= 30:
                rows.append(
                    (
                        m["in"] - t0,
                        m["rs0"] - m["in"],
                        m["rs1"] - m["rs0"],
                        m["start"] - m["rs1"],
                        m["out"] - m["start"],
                    )
                    + (t1 - m["out"],)
                )
    server.should_exit = True
    medians = np.median(np.array(rows), axis=0) * 1000
    print(" | ".join(f"{name} {ms:.2f} ms" for name, ms in zip(STAGES, medians, strict=True)))
    print(f"outside run_search: {medians.sum() - medians[2]:.2f} ms of {medians.sum():.2f} ms")


if __name__ == "__main__":
    main()
