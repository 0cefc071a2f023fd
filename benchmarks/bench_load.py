"""Loopback load against `crossmodal serve`: sustained mixed traffic, and batching on vs off.

Two parts, each against a server in its own process over the same 10,000 items as
bench_search (SQLite, the offline model), with an asyncio httpx client on the same 2 cores:

* ``load``: mixed traffic (70% text search, 15% image search, 15% item image fetch) for
  ``--minutes`` at each concurrency in ``--concurrency`` (default 32 and 256). Per minute:
  requests/s, p50/p99, 5xx and transport errors, 429s; the server's RSS every few seconds.
* ``batching``: text search only, at concurrency 32, for ``--batch-seconds`` with batching on
  and then off (the query cache off in both: it is the batcher being measured). Throughput and
  p99 of each and their ratio.

    .venv/bin/python benchmarks/bench_load.py                      # both parts, 10 min a level
    .venv/bin/python benchmarks/bench_load.py --part batching      # ~3 minutes
    .venv/bin/python benchmarks/bench_load.py --part load --minutes 2 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import record  # noqa: E402
from benchmarks.bench_search import Server, _queries, populate  # noqa: E402


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 90, 200)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def _drive(url: str, concurrency: int, seconds: float, mix: bool, queries: list[str], items: int, server):
    """Run ``concurrency`` workers for ``seconds``; returns (records, rss samples)."""
    records: list[tuple[float, float, int]] = []  # (start offset s, latency ms, status; 0 = transport error)
    rss: list[tuple[float, float]] = []
    image = _png()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    t_start = time.perf_counter()
    stop_at = t_start + seconds

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < stop_at:
            roll = rng.random() if mix else 0.0
            t0 = time.perf_counter()
            try:
                if roll < 0.70:
                    body = {"query": rng.choice(queries), "k": 10}
                    r = await client.post("/v1/search/text", json=body)
                elif roll < 0.85:
                    r = await client.post("/v1/search/image", json={"image_base64": image, "k": 10})
                else:
                    r = await client.get(f"/v1/items/{rng.randint(1, items)}/image")
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            records.append((t0 - t_start, (time.perf_counter() - t0) * 1000, status))

    async def sample_memory() -> None:
        while time.perf_counter() < stop_at:
            rss.append((time.perf_counter() - t_start, server.rss_mb()))
            await asyncio.sleep(5)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(sample_memory(), *(worker(i) for i in range(concurrency)))
    return records, rss


def _summary(records, seconds: float) -> dict:
    lat = np.array([ms for _, ms, s in records if s == 200])
    statuses = [s for _, _, s in records]
    return {
        "requests": len(records),
        "ok": int(len(lat)),
        "rps_ok": len(lat) / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "errors_5xx": sum(1 for s in statuses if s >= 500),
        "transport_errors": statuses.count(0),
        "other_4xx": sum(1 for s in statuses if 400 <= s < 500 and s != 429),
        "shed_429": statuses.count(429),
    }


def _per_minute(records, seconds: float) -> list[dict]:
    out = []
    for m in range(max(1, int(np.ceil(seconds / 60)))):
        chunk = [r for r in records if m * 60 <= r[0] < (m + 1) * 60]
        span = min(60.0, seconds - m * 60)
        if chunk and span > 1:
            out.append({"minute": m + 1, **_summary(chunk, span)})
    return out


def part_load(tmp: Path, args, queries) -> tuple[dict, str]:
    server = Server(tmp, args.model)
    results, rows = {}, []
    try:
        for c in args.concurrency:
            seconds = args.minutes * 60
            records, rss = asyncio.run(_drive(server.url, c, seconds, True, queries, args.items, server))
            whole, minutes = _summary(records, seconds), _per_minute(records, seconds)
            mem = [mb for _, mb in rss]
            results[str(c)] = {**whole, "per_minute": minutes, "rss_mb": rss}
            p99s = [m["p99_ms"] for m in minutes if m["p99_ms"]]
            rows.append(
                f"| {c} | {whole['rps_ok']:.1f} | {whole['p50_ms']:.1f} | {whole['p99_ms']:.1f} | "
                f"{min(p99s):.0f}–{max(p99s):.0f} | {whole['errors_5xx'] + whole['transport_errors']} | "
                f"{whole['shed_429']:,} | {mem[0]:.0f} → {max(mem):.0f} → {mem[-1]:.0f} |"
            )
            print(rows[-1], flush=True)
    finally:
        server.stop()
    table = "\n".join(rows)
    md = f"""## Sustained load (`benchmarks/bench_load.py --part load`)

Mixed traffic (70% text search, 15% image search by base64 JSON, 15% item image fetch) for
{args.minutes:g} minutes at each concurrency, loopback, over {args.items:,} items (SQLite, `{args.model}`,
default settings: batching on, `CROSSMODAL_MAX_INFLIGHT` 64). The client runs on the same 2 cores
as the server. Latency is of the 200s; errors are 5xx and transport errors; 429 is load shed
by the concurrency cap (fast, with `Retry-After`).

| concurrency | ok req/s | p50 ms | p99 ms | p99 by minute | errors | 429s | RSS MB start → max → end |
|---|---|---|---|---|---|---|---|
{table}

Per-minute figures are in `benchmarks/results/load.json`.
Reproduce: `.venv/bin/python benchmarks/bench_load.py --part load --minutes {args.minutes:g}`
"""
    return results, md


def part_batching(tmp: Path, args, queries) -> tuple[dict, str]:
    results = {}
    for mode, env in (("on", {"batching": "true"}), ("off", {"batching": "false"})):
        server = Server(tmp, args.model, query_cache_size="0", **env)
        try:
            asyncio.run(_drive(server.url, 32, args.warmup_seconds, False, queries, args.items, server))  # warm up
            records, _ = asyncio.run(_drive(server.url, 32, args.batch_seconds, False, queries, args.items, server))
        finally:
            server.stop()
        results[mode] = _summary(records, args.batch_seconds)
        print(mode, results[mode], flush=True)
    on, off = results["on"], results["off"]
    ratio = on["rps_ok"] / off["rps_ok"]
    err_on, err_off = (r["errors_5xx"] + r["transport_errors"] for r in (on, off))
    results["throughput_ratio"] = ratio
    md = f"""## Dynamic batching (`benchmarks/bench_load.py --part batching`)

Text search only (k=10, target image) at concurrency 32 for {args.batch_seconds:g} s each, batching on
(`CROSSMODAL_BATCH_WINDOW_MS` 2, `CROSSMODAL_BATCH_MAX_SIZE` 32) and then off, the query cache off
in both, over {args.items:,} items (`{args.model}`, exact index), the same 2 cores for client and server.

| batching | ok req/s | p50 ms | p99 ms | errors |
|---|---|---|---|---|
| on | {on["rps_ok"]:.1f} | {on["p50_ms"]:.1f} | {on["p99_ms"]:.1f} | {err_on} |
| off | {off["rps_ok"]:.1f} | {off["p50_ms"]:.1f} | {off["p99_ms"]:.1f} | {err_off} |
| **on / off** | **{ratio:.2f}x** | {on["p50_ms"] / off["p50_ms"]:.2f}x | {on["p99_ms"] / off["p99_ms"]:.2f}x | |

Goal: ≥ 3x throughput with p99 no worse — {"met" if ratio >= 3 and on["p99_ms"] <= off["p99_ms"] else "**not met**"}.
Reproduce: `.venv/bin/python benchmarks/bench_load.py --part batching --batch-seconds {args.batch_seconds:g}`
"""
    return results, md


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["load", "batching", "both"], default="both")
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--batch-seconds", type=float, default=60)
    ap.add_argument("--warmup-seconds", type=float, default=5)
    ap.add_argument("--model", default="builtin:lit-mini")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    from app.config import Settings
    from crossmodal_kernel.encoder import Encoder

    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    populate(Settings(data_dir=tmp, model_spec=args.model), args.items, Encoder.from_spec(args.model, device="cpu"))
    queries = _queries(2000, seed=3)
    parts = ["batching", "load"] if args.part == "both" else [args.part]
    for part in parts:
        result, md = (part_batching if part == "batching" else part_load)(tmp, args, queries)
        print(md)
        if not args.no_record:
            record("load" if part == "load" else "batching", {"args": vars(args), **result}, md)


if __name__ == "__main__":
    main()
