"""Encoding runtimes: PyTorch eager against ONNX Runtime (and int8), in process and over HTTP, in one run.

In process, on `builtin:lit-mini` (CPU): text and image encode latency at batch 1 and throughput at
batch 32, each runtime's calls interleaved so that machine noise hits them alike. Over HTTP, a
server per runtime (`CROSSMODAL_RUNTIME`), all up at once and queried in turns, over the same
10,000 items as bench_search, query cache off: `POST /v1/search/text` p50/p99 at concurrency 1 and
throughput at concurrency 32, with the server's own stage timings (encode / search / hydrate) to
say where the time goes.

    .venv/bin/python benchmarks/bench_encode.py [--items 10000] [--queries 300] [--seconds 30] [--int8 DATASET]

``--int8 DATASET`` adds the int8 runtime, gated on DATASET (a manifest or synthetic dataset folder):
its figures are reported only when the service accepts it there, and the verdict either way.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()  # the same OpenMP settings as the server, before torch loads

import torch  # noqa: E402

from app.config import Settings  # noqa: E402
from app.encoders import load_encoder  # noqa: E402
from benchmarks._report import record  # noqa: E402
from benchmarks.bench_load import _drive, _summary  # noqa: E402
from benchmarks.bench_search import Server, _queries, percentiles, populate  # noqa: E402
from crossmodal_kernel.encoder import Encoder  # noqa: E402
from crossmodal_kernel.onnx_encoder import OnnxEncoder, session_options  # noqa: E402
from crossmodal_kernel.onnx_export import TOWERS  # noqa: E402

GOALS = {"text_b1": 3.0, "image_b1": 2.0, "http_p50": 0.6, "http_c32": 1.5}


def _images(n: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(n)]


def _interleaved(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Milliseconds per call, each runtime once per round, after two warm-up rounds."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 2):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if round_ >= 2:
                times[name].append((time.perf_counter() - t0) * 1000)
    return times


def in_process(encoders: dict[str, Encoder], repeats: int, queries: list[str]) -> dict:
    """Per runtime: batch-1 p50 ms and batch-32 items/s for texts, image tensors and decoded images."""
    pixels = torch.stack([next(iter(encoders.values())).preprocess(im) for im in _images(32)])
    images = _images(32, seed=1)
    texts = itertools.cycle(queries)
    cases: dict[str, tuple[Callable[[Encoder], object], int]] = {
        "text_b1": (lambda e: e.encode_texts([next(texts)]), 1),
        "image_b1": (lambda e: e.encode_image_tensors(pixels[:1]), 1),
        "image_decoded_b1": (lambda e: e.encode_images(images[:1]), 1),
        "text_b32": (lambda e: e.encode_texts([next(texts) for _ in range(32)]), 32),
        "image_b32": (lambda e: e.encode_image_tensors(pixels), 32),
    }
    out: dict = {name: {} for name in encoders}
    for case, (call, n) in cases.items():
        rounds = repeats if n == 1 else max(3, repeats // 10)
        times = _interleaved({name: functools.partial(call, e) for name, e in encoders.items()}, rounds)
        for name, ms in times.items():
            out[name][case] = statistics.median(ms) if n == 1 else 1000 * n / statistics.median(ms)
        print(case, {k: round(v[case], 2) for k, v in out.items()}, flush=True)
    return out


def over_http(tmp: Path, model: str, runtimes: list[str], args, queries: list[str]) -> dict:
    """A server per runtime, all up at once and measured in turns so that machine noise hits them alike:
    concurrency 1 query by query (with the server's stage timings), concurrency 32 in 5-s slices."""
    servers: dict[str, Server] = {}
    try:
        for runtime in runtimes:
            # vector search only (no lexical list): it is the encoder being measured
            env = {"query_cache_size": "0", "runtime": runtime, "search_mode": "vector"}
            if runtime == "onnx-int8":
                env["int8_eval_set"] = str(args.int8)
            servers[runtime] = Server(tmp, model, **env)
        clients = {rt: httpx.Client(base_url=s.url, timeout=60) for rt, s in servers.items()}
        ms: dict[str, list[float]] = {rt: [] for rt in servers}
        stages: dict[str, dict[str, list[float]]] = {rt: {} for rt in servers}
        for i, q in enumerate(queries):
            for rt, client in clients.items():
                _one_query(client, q, ms[rt] if i >= args.warmup else [], stages[rt] if i >= args.warmup else {})
        records: dict[str, list] = {rt: [] for rt in servers}
        cpu = {rt: {"server": 0.0, "client": 0.0} for rt in servers}
        batches = {rt: _batch_sizes(client) for rt, client in clients.items()}
        for turn in range(-1, int(np.ceil(args.seconds / 5))):  # turn -1 warms up
            for rt, server in servers.items():
                before = (_cpu_seconds(server.proc.pid), time.process_time())
                got, _ = asyncio.run(_drive(server.url, 32, 5, False, queries, args.items, server))
                if turn >= 0:
                    records[rt].extend(got)
                    cpu[rt]["server"] += _cpu_seconds(server.proc.pid) - before[0]
                    cpu[rt]["client"] += time.process_time() - before[1]
                else:
                    batches[rt] = _batch_sizes(clients[rt])
        ready = {rt: client.get("/readyz").json() for rt, client in clients.items()}
        batch_sums = {rt: np.subtract(_batch_sizes(clients[rt]), batches[rt]) for rt in servers}
    finally:
        for server in servers.values():
            server.stop()
    out = {}
    for rt in servers:
        c32 = _summary(records[rt], 5 * int(np.ceil(args.seconds / 5)))
        done = max(c32["ok"], 1)
        c32 |= {f"{k}_cpu_ms_per_request": 1000 * v / done for k, v in cpu[rt].items()}
        c32["mean_batch"] = float(batch_sums[rt][0] / max(batch_sums[rt][1], 1))
        stage_p50 = {k: float(np.median(v)) for k, v in stages[rt].items()}
        out[rt] = {"c1": percentiles(ms[rt]), "stages_p50_ms": stage_p50, "c32": c32, "warnings": ready[rt]["warnings"]}
        print(rt, out[rt], flush=True)
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batch_sizes(client: httpx.Client) -> tuple[float, float]:
    """(sum, count) of the server's micro-batch sizes so far, from its Prometheus metrics."""
    text = client.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith(("crossmodal_search_batch_size_sum", "crossmodal_search_batch_size_count")):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0].rsplit("_", 1)[1]] = float(value)
    return values.get("sum", 0.0), values.get("count", 0.0)


def _one_query(client: httpx.Client, query: str, ms: list[float], stages: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    r = client.post("/v1/search/text", json={"query": query, "target": "image", "k": 10})
    elapsed = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    ms.append(elapsed)
    for part in r.headers.get("server-timing", "").split(", "):
        if ";dur=" in part:
            name, dur = part.split(";dur=")
            stages.setdefault(name, []).append(float(dur))


def session_variants(onnx: Encoder) -> dict[str, Encoder]:
    """The same graphs with the thread settings the service does not use, in process only: what they cost."""
    import onnxruntime as ort

    assert isinstance(onnx, OnnxEncoder) and onnx.graphs is not None
    graphs = onnx.graphs
    variants: dict[str, Encoder] = {}
    for name, threads, spinning in (("onnx, spinning threads", None, True), ("onnx, 1 intra-op thread", 1, False)):
        options = session_options(threads, spinning=spinning)
        sessions = {
            t: ort.InferenceSession(str(graphs.path(t)), options, providers=["CPUExecutionProvider"]) for t in TOWERS
        }
        variants[name] = OnnxEncoder(onnx.loaded, sessions, batch_size=onnx.batch_size, graphs=graphs)
    return variants


def int8_verdict(settings: Settings, model: str) -> tuple[Encoder | None, str]:
    encoder = load_encoder(settings, model, device="cpu", runtime="onnx-int8")
    if encoder.runtime == "onnx-int8":
        return encoder, "accepted"
    return None, "; ".join(encoder.runtime_warnings) or "refused"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:lit-mini")
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--int8", type=Path, default=None, help="evaluation set that gates the int8 runtime")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-encode-"))
    settings = Settings(data_dir=tmp, model_spec=args.model, int8_eval_set=args.int8)
    t0 = time.perf_counter()
    encoders = {rt: load_encoder(settings, args.model, device="cpu", runtime=rt) for rt in ("torch", "onnx")}
    export_s = time.perf_counter() - t0  # the first ONNX load exports; servers below find the cache
    if encoders["onnx"].runtime != "onnx":
        raise RuntimeError(f"ONNX Runtime did not load: {encoders['onnx'].runtime_warnings}")
    verdict = "not measured (no --int8 evaluation set)"
    if args.int8 is not None:
        int8, verdict = int8_verdict(settings, args.model)
        if int8 is not None:
            encoders["onnx-int8"] = int8
    queries = _queries(max(args.queries + args.warmup, 400), seed=1)
    local = in_process({**encoders, **session_variants(encoders["onnx"])}, args.repeats, queries)
    http = {}
    if not args.skip_http:
        populate(settings, args.items, encoders["torch"])
        http = over_http(tmp, args.model, list(encoders), args, queries[: args.queries + args.warmup])
    result = {"model": args.model, "items": args.items, "threads": torch.get_num_threads(),
              "export_and_load_s": export_s, "int8_verdict": verdict, "in_process": local, "http": http,
              "goals": GOALS}  # fmt: skip
    md = report(result, args)
    print(md)
    if not args.no_record:
        record("encode", result, md)


def _tables(result: dict) -> tuple[str, str, dict[str, float]]:
    """In-process and HTTP rows, each figure with its ratio against torch eager; the goals' ratios."""
    local, http = result["in_process"], result["http"]
    base, base_http = local["torch"], http.get("torch")
    rows: list[str] = []
    http_rows: list[str] = []
    ratios: dict[str, float] = {}
    for rt, f in local.items():
        x = {case: (base[case] / v if case.endswith("b1") else v / base[case]) for case, v in f.items()}
        rows.append(
            f"| {rt} | {f['text_b1']:.2f} ({x['text_b1']:.2f}x) | {f['image_b1']:.2f} ({x['image_b1']:.2f}x) | "
            f"{f['image_decoded_b1']:.2f} ({x['image_decoded_b1']:.2f}x) | {f['text_b32']:.0f} ({x['text_b32']:.2f}x) "
            f"| {f['image_b32']:.1f} ({x['image_b32']:.2f}x) |"
        )
        if rt == "onnx":
            ratios |= {"text_b1": x["text_b1"], "image_b1": x["image_b1"]}
        if base_http is None or rt not in http:
            continue
        h = http[rt]
        p50 = h["c1"]["p50_ms"] / base_http["c1"]["p50_ms"]
        rps = h["c32"]["rps_ok"] / base_http["c32"]["rps_ok"]
        stages = " / ".join(f"{v:.1f}" for v in h["stages_p50_ms"].values())
        http_rows.append(
            f"| {rt} | {h['c1']['p50_ms']:.1f} ({p50:.2f}x) | {h['c1']['p99_ms']:.1f} | {stages} | "
            f"{h['c32']['rps_ok']:.1f} ({rps:.2f}x) | {h['c32']['p50_ms']:.0f} | {h['c32']['p99_ms']:.0f} | "
            f"{h['c32']['mean_batch']:.1f} | {h['c32']['server_cpu_ms_per_request']:.1f} | "
            f"{h['c32']['client_cpu_ms_per_request']:.1f} |"
        )
        if rt == "onnx":
            ratios |= {"http_p50": p50, "http_c32": rps}
    return "\n".join(rows), "\n".join(http_rows), ratios


def _goals(ratios: dict[str, float]) -> str:
    def verdict(key: str) -> str:
        if key not in ratios:
            return "not measured"
        met = ratios[key] <= GOALS[key] if key == "http_p50" else ratios[key] >= GOALS[key]
        return "met" if met else "**not met**"

    labels = {"text_b1": "text b1", "image_b1": "image b1", "http_p50": "HTTP p50", "http_c32": "HTTP c32"}
    return ", ".join(
        f"{label} {ratios.get(key, float('nan')):.2f}x (goal {'≤' if key == 'http_p50' else '≥'} {GOALS[key]}x: "
        f"{verdict(key)})"
        for key, label in labels.items()
    )


def report(result: dict, args) -> str:
    rows, http_rows, ratios = _tables(result)
    stage_names = " / ".join(next(iter(result["http"].values()))["stages_p50_ms"]) if result["http"] else ""
    command = f"--items {result['items']} --queries {args.queries} --seconds {args.seconds:g}"
    return f"""## Encoding runtimes (`benchmarks/bench_encode.py`)

`{result["model"]}` on the CPU ({result["threads"]} threads), PyTorch eager against ONNX Runtime
(`CROSSMODAL_RUNTIME`), same run. Ratios in brackets are against torch eager: speed-ups in process,
the ms ratio for HTTP p50 and the req/s ratio at concurrency 32.

In process: median ms of one call at batch 1 (text: tokenise + forward; image: a preprocessed
tensor, and a decoded 256-px image with its preprocessing), items/s at batch 32; the runtimes'
calls interleaved one by one. The two `onnx, …` variants run the same graphs with the thread
settings the service does not use (its sessions: as many intra-op threads as torch, no spinning).

| runtime | text b1 ms | image b1 ms | image b1 ms, decoded | texts/s b32 | images/s b32 |
|---|---|---|---|---|---|
{rows}

HTTP: a server per runtime over {result["items"]:,} items (exact index, vector search, query cache
off), all up at once and queried in turns: `POST /v1/search/text` k=10, {args.queries} queries one at
a time (each query to every server in turn), then concurrency 32 in 5-s turns, {args.seconds:g} s per
runtime. Times in ms; stage p50s from the server's `Server-Timing` ({stage_names}); at concurrency 32 the
mean micro-batch (server metrics) and the CPU ms per answered request of the server process and of
the client (this process, on the same cores).

| runtime | c1 p50 | c1 p99 | c1 stages p50 | c32 req/s | c32 p50 | c32 p99 | batch | server CPU | client CPU |
|---|---|---|---|---|---|---|---|---|---|
{http_rows}

Goals (ONNX against torch eager): {_goals(ratios)}.
int8: {result["int8_verdict"]}. First load of both runtimes, export included: {result["export_and_load_s"]:.1f} s.
Reproduce: `.venv/bin/python benchmarks/bench_encode.py {command}`
"""


if __name__ == "__main__":
    main()
