"""End-to-end HTTP text->image search latency against the in-process floor, over 10,000 items.

The floor is what a search cannot avoid: encode the query with the same model
and search the same FAISS index, in one process. The HTTP figure adds
everything the service does on top: uvicorn, FastAPI validation, the
threadpool hop, DB hydration and JSON. Both run on the same machine in the
same run, one request at a time, and the result is their ratio.

    .venv/bin/python benchmarks/bench_search.py [--items 10000] [--queries 300] [--corpus synthetic|wordnet]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()  # the same OpenMP settings as the server, before torch loads

from app.config import Settings  # noqa: E402
from app.db import crud  # noqa: E402
from app.db.session import make_engine, make_session_factory, upgrade  # noqa: E402
from app.encoders import load_encoder  # noqa: E402
from app.pipelines.ingest import ensure_active_model  # noqa: E402
from app.pipelines.publish import embeddings_dir, publish_indexes  # noqa: E402
from benchmarks._report import record  # noqa: E402
from crossmodal_kernel.encoder import Encoder  # noqa: E402
from index import flat, shards, store  # noqa: E402
from training.synthetic.shapes import COLOURS, POSITIONS, SHAPES, SIZES, Scene  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`uvicorn app.asgi:app` in a subprocess with the given CROSSMODAL_* settings."""

    def __init__(self, data_dir: Path, model: str, **env: str):
        self.port = _free_port()
        full = {**os.environ, "CROSSMODAL_DATA_DIR": str(data_dir), "CROSSMODAL_MODEL_SPEC": model}
        full.update({f"CROSSMODAL_{k.upper()}": v for k, v in env.items()})
        command = [sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--log-level", "warning"], env=full, cwd=Path(__file__).resolve().parent.parent
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("server never became ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _queries(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    return [Scene(pick(list(COLOURS)), pick(SHAPES), pick(SIZES), pick(POSITIONS)).caption() for _ in range(n)]


def _wordnet_nouns() -> list[tuple[str, str]]:
    """(first lemma, gloss) of every WordNet noun synset (Debian's wordnet-base)."""
    from training.thesaurus import find_wordnet

    out = []
    for line in (find_wordnet() / "data.noun").read_text(errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue  # the licence header
        fields, gloss = line.split("|", 1)
        out.append((fields.split()[4].replace("_", " "), gloss.split(";")[0].strip()))
    return out


def corpus(name: str, n_items: int, n_queries: int) -> tuple[list[str], list[str]]:
    """Item texts and queries. ``synthetic``: captions of the shapes world (a 30-word vocabulary, so each
    query word is in a sixth to a third of the items: the lexical list's worst case). ``wordnet``: WordNet
    noun glosses as texts ("an act that has disastrous consequences") and other synsets' names as
    queries ("laying waste"): English, with its long tail of rare words."""
    if name == "synthetic":
        return _queries(n_items, seed=2), _queries(n_queries, seed=1)
    nouns = _wordnet_nouns()
    order = np.random.default_rng(0).permutation(len(nouns))
    texts = [nouns[i][1] for i in order[:n_items]]
    return texts, [nouns[i][0] for i in order[n_items : n_items + n_queries]]


def populate(settings: Settings, n_items: int, encoder: Encoder, texts: list[str] | None = None) -> None:
    """``n_items`` DB items with random unit image vectors (latency does not depend on vector content)
    and texts (``texts``, or synthetic captions), so hybrid and lexical queries find word matches."""
    texts = texts if texts is not None else _queries(n_items, seed=2)
    if len(texts) != n_items:
        raise ValueError(f"{len(texts)} texts for {n_items} items")
    upgrade(settings.resolved_database_url)
    sf = make_session_factory(make_engine(settings.resolved_database_url))
    image = settings.data_dir / "one.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    with sf() as session:
        ids, _ = crud.add_items(
            session,
            [
                crud.NewItem(external_id=f"item-{i}", image_path=str(image), text=caption, metadata={"i": i})
                for i, caption in enumerate(texts)  # words the lexical list can match
            ],
        )
        session.commit()
        model = ensure_active_model(session, settings)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(ids), encoder.embed_dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    shards.write_shard(embeddings_dir(settings, model.id, "image"), np.array(ids), x)
    publish_indexes(sf, model, settings)


MODES = ("vector", "lexical", "hybrid")


def _each_mode(client: httpx.Client, query: str) -> dict[str, float]:
    """Client-measured ms of one text query in each search mode (vector, lexical, hybrid)."""
    took = {}
    for mode in MODES:
        t0 = time.perf_counter()
        r = client.post("/v1/search/text", json={"query": query, "target": "image", "k": 10, "mode": mode})
        took[mode] = (time.perf_counter() - t0) * 1000
        r.raise_for_status()
    return took


def _modes_table(modes: dict[str, list[float]]) -> str:
    base = float(np.median(modes["vector"]))
    rows = [
        f"| {m} | {np.median(v):.2f} | {np.percentile(v, 99):.2f} | {np.median(v) / base:.2f}x |"
        for m, v in modes.items()
    ]
    return "\n".join(["| mode | p50 ms | p99 ms | p50 vs vector |", "|---|---|---|---|", *rows])


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--model", default="builtin:lit-mini")
    ap.add_argument("--corpus", choices=["synthetic", "wordnet"], default="synthetic")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    settings = Settings(data_dir=tmp, model_spec=args.model)
    # The floor encodes as the server does: the same runtime (CROSSMODAL_RUNTIME, ONNX by default).
    encoder = load_encoder(settings, args.model, device="cpu")
    texts, queries = corpus(args.corpus, args.items, args.queries + args.warmup)
    populate(settings, args.items, encoder, texts)

    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        active = crud.get_active_model(s)
        if active is None:
            raise RuntimeError("populate() left no active model")
        row = crud.get_active_indexes(s, active.id)["image"]
    index = store.load(Path(row.path)).index

    # The query cache off: the floor encodes every query, so the server must too (repeats would hit it).
    server = Server(tmp, args.model, query_cache_size="0")
    floor, http, server_ms = [], [], []
    modes: dict[str, list[float]] = {m: [] for m in MODES}
    stages: dict[str, list[float]] = {}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            # Interleave floor and HTTP query by query, so machine noise hits both alike.
            for i, q in enumerate(queries):
                t0 = time.perf_counter()
                flat.search(index, encoder.encode_texts([q]), 10)
                t1 = time.perf_counter()
                r = client.post("/v1/search/text", json={"query": q, "target": "image", "k": 10, "mode": "vector"})
                t2 = time.perf_counter()
                r.raise_for_status()
                assert len(r.json()["data"]) == 10
                for mode, ms in _each_mode(client, q).items():
                    if i >= args.warmup:
                        modes[mode].append(ms)
                if i >= args.warmup:
                    floor.append((t1 - t0) * 1000)
                    http.append((t2 - t1) * 1000)
                    server_ms.append(r.json()["took_ms"])
                    for part in r.headers["server-timing"].split(", "):
                        name, dur = part.split(";dur=")
                        stages.setdefault(name, []).append(float(dur))
    finally:
        server.stop()

    f, h, inside = percentiles(floor), percentiles(http), percentiles(server_ms)
    ratio = h["p50_ms"] / f["p50_ms"]
    result = {
        "items": args.items,
        "corpus": args.corpus,
        "queries": args.queries,
        "model": args.model,
        "floor": f,
        "http": h,
        "server_took_ms": inside,
        "server_stages_p50_ms": {k: float(np.median(v)) for k, v in stages.items()},
        "p50_ratio": ratio,
        "p99_ratio": h["p99_ms"] / f["p99_ms"],
        "goal_p50_ratio": 1.1,
        "modes_p50_ms": {m: float(np.median(v)) for m, v in modes.items()},
        "modes_p50_ratio_to_vector": {m: float(np.median(v) / np.median(modes["vector"])) for m, v in modes.items()},
    }
    hybrid_verdict = "met" if result["modes_p50_ratio_to_vector"]["hybrid"] <= 1.3 else "**not met**"
    stage_p50 = " / ".join(f"{np.median(v):.2f}" for v in stages.values())
    corpus_flag = "" if args.corpus == "synthetic" else f" --corpus {args.corpus}"
    title = "" if args.corpus == "synthetic" else ", WordNet texts"
    texts_are = {
        "synthetic": "synthetic captions (a 30-word vocabulary: each query word is in a sixth to a third of the "
        "items, the lexical list's worst case)",
        "wordnet": "WordNet noun glosses, the queries other synsets' names (English, with its long tail of rare words)",
    }[args.corpus]
    md = f"""## Search latency{title} (`benchmarks/bench_search.py{corpus_flag}`)

HTTP `POST /v1/search/text` (target image, k=10) at concurrency 1 over {args.items:,} items, against
the in-process floor (encode the query + exact FAISS search) measured in the same run. Model
`{args.model}` on the `{encoder.runtime}` runtime in both, SQLite, {args.queries} queries after
{args.warmup} warm-up, floor and HTTP interleaved query by query (the server runs in its own process
on the same 2 cores).

| path | p50 ms | p99 ms |
|---|---|---|
| floor: encode + FAISS, in process | {f["p50_ms"]:.2f} | {f["p99_ms"]:.2f} |
| in the handler (`took_ms`: encode + search + hydrate) | {inside["p50_ms"]:.2f} | {inside["p99_ms"]:.2f} |
| … of which encode / search / hydrate (p50) | {stage_p50} | |
| HTTP end to end (client-measured) | {h["p50_ms"]:.2f} | {h["p99_ms"]:.2f} |
| **ratio HTTP / floor** | **{ratio:.2f}x** | {h["p99_ms"] / f["p99_ms"]:.2f}x |

Goal: p50 within 1.1x of the floor — {"met" if ratio <= 1.1 else "**not met**"}.

Each search mode on the same queries, HTTP end to end, interleaved with the above (items' texts are
{texts_are}):

{_modes_table(modes)}

Goal: hybrid p50 ≤ 1.3x vector-only — {hybrid_verdict}.
Reproduce: `.venv/bin/python benchmarks/bench_search.py --items {args.items} --queries {args.queries}{corpus_flag}`
"""
    print(md)
    if not args.no_record:
        record("search" if args.corpus == "synthetic" else f"search-{args.corpus}", result, md)


if __name__ == "__main__":
    main()
