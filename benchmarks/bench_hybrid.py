"""Hybrid search on real data: vector, lexical and fused rankings for reworded text queries (issue 24).

One house's drawings (``--house``, default google) of every concept it draws are ingested into a
temporary service with the default model bootstrapped on ``trainval.jsonl`` (as ``crossmodal
bootstrap`` does). Each item's text is its CLDR name and its metadata the manifest's columns
(house, codepoint, category, subcategory, family, subset), without the ``captions`` list, which
holds the very words the queries are made of. The queries never use the name:

- ``short name``: the concept's emoji-datasource short name, where it differs from the name
  ("smiley" for "grinning face with big eyes");
- ``keywords``: its CLDR keywords, joined ("awesome big eyes face grin grinning happy mouth open
  smile smiling teeth yay"): some share words with the name, as people's words do;
- ``other keywords``: those of its keywords that are not words of its name ("awesome grin happy
  mouth open smile smiling teeth yay"): the name's words are never in the query.

A hit is an image of the query's concept (one drawing each here). For each query the vector list
(cosine, through the service's search path) and the lexical list (the database's full-text
index) are read ``--window`` deep once, and every fusion variant ranks their union
(``app.serving.hybrid.fuse``, what the service runs). R@1, R@10 and nDCG@10 for train concepts
(whose keywords the bootstrap trained on, as captions) and held-out concepts (never seen) apart.
Latency: ``run_search`` in each mode on the same warm state, p50 as a ratio to vector mode.

    .venv/bin/python benchmarks/bench_hybrid.py --data data/emoji --house google
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

from app.config import Settings  # noqa: E402
from app.db import crud, lexical  # noqa: E402
from app.db.models import Item  # noqa: E402
from app.db.session import make_engine, make_session_factory, upgrade  # noqa: E402
from app.serving import hybrid  # noqa: E402
from app.serving.batching import QueryCache  # noqa: E402
from app.serving.query import QueryInput, run_search  # noqa: E402
from app.serving.schemas import SearchOptions  # noqa: E402
from app.serving.state import SearchState  # noqa: E402
from benchmarks._report import record  # noqa: E402

SUBSETS = ("train", "val", "heldout_concepts")
PG_LEXICAL, PG_HYBRID = "lexical (PostgreSQL)", "default fusion, PostgreSQL's lexical list"
REPORTED = {"train": "train concepts", "heldout_concepts": "held-out concepts"}
# (label, fusion, rrf k, vector weight, relevance swing); the first is the service's default. The swing moves
# one query's vector weight with the calibrated relevance r of the vector list's first hit (weight + swing * (2r - 1),
# app.serving.hybrid.vector_weight): a list the model is unsure of counts less.
_DEFAULTS = Settings.model_fields
_FUSION, _K = _DEFAULTS["hybrid_fusion"].default, _DEFAULTS["hybrid_rrf_k"].default
_W, _SWING = _DEFAULTS["hybrid_vector_weight"].default, _DEFAULTS["hybrid_relevance_swing"].default
DEFAULT = (f"default: {_FUSION} k={_K:g}, weight {_W:g} ± {_SWING:g} by relevance", _FUSION, _K, _W, _SWING)
VARIANTS: tuple[tuple[str, str, float, float, float], ...] = (
    DEFAULT,
    ("rrf k=1, fixed weights (the default before)", "rrf", 1, 0.5, 0.0),
    *((f"rrf k={k}", "rrf", k, 0.5, 0.0) for k in (0, 2, 3, 5, 10, 20, 60, 100)),
    ("rrf k=1, vector 0.7", "rrf", 1, 0.7, 0.0),
    ("rrf k=1, vector 0.3", "rrf", 1, 0.3, 0.0),
    ("rrf k=1, weight 0.5 ± 0.3 by relevance", "rrf", 1, 0.5, 0.3),
    ("rrf k=1, weight 0.5 ± 0.4 by relevance", "rrf", 1, 0.5, 0.4),
    ("relative, vector 0.5", "relative", 0, 0.5, 0.0),
    ("relative, vector 0.7", "relative", 0, 0.7, 0.0),
    ("relative, vector 0.3", "relative", 0, 0.3, 0.0),
    ("relative, weight 0.5 ± 0.2 by relevance", "relative", 0, 0.5, 0.2),
)
SETS = ("short name", "keywords", "other keywords")


def concept_words(cache: Path | None) -> dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """codepoint -> (name, short names, keywords), from the cached emoji-datasource and CLDR packages."""
    from training.emoji.build import CLDR_DERIVED_JSON, CLDR_JSON, EMOJI_JSON
    from training.emoji.concepts import CldrNames, load_concepts
    from training.emoji.packages import Sources, fetch_packages, read_member

    sources = Sources()
    tarballs = fetch_packages([sources.data, sources.cldr, sources.cldr_derived], cache)
    cldr = CldrNames(
        read_member(tarballs[sources.cldr], CLDR_JSON), read_member(tarballs[sources.cldr_derived], CLDR_DERIVED_JSON)
    )
    concepts = load_concepts(read_member(tarballs[sources.data], EMOJI_JSON), cldr)
    return {c.codepoint: (c.name, c.short_names, c.keywords) for c in concepts}


def queries_for(name: str, short_names: Sequence[str], keywords: Sequence[str]) -> dict[str, str]:
    """The reworded queries of one concept (see the module docstring); a set it has no wording for is left out."""
    out = {}
    short = [s for s in short_names if s.lower() != name.lower()]
    if short:
        out["short name"] = short[0]
    if keywords:
        out["keywords"] = " ".join(keywords)
    name_words = set(lexical.terms(name))
    other = [k for k in keywords if not set(lexical.terms(k)) <= name_words]
    if other:
        out["other keywords"] = " ".join(other)
    return out


def manifest(data: Path, house: str, out: Path) -> Path:
    """The house's drawings of every subset as one JSONL manifest, images absolute, captions left out."""
    rows = []
    for subset in SUBSETS:
        path = data / "eval" / f"{subset}-{house}.jsonl"
        for line in path.read_text().splitlines():
            row = json.loads(line)
            row.pop("captions", None)
            row["image"] = str((path.parent / row["image"]).resolve())
            row["subset"] = subset
            rows.append(row)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def service(work: Path, data: Path, house: str, model_spec: str):
    """Settings and a session factory of a service holding the house's drawings, bootstrapped once per ``work``."""
    return bootstrapped_service(
        work, data, model_spec, f"{house}'s drawings", lambda: manifest(data, house, work / f"{house}.jsonl")
    )


def bootstrapped_service(work: Path, data: Path, model_spec: str, what: str, items: Callable[[], Path]):
    """Settings and a session factory of a SQLite service in ``work``: ``model_spec`` bootstrapped on
    ``data``'s trainval split and the manifest ``items()`` writes (``what``) ingested, each once per ``work``."""
    from app.pipelines.bootstrap import bootstrap_model
    from app.pipelines.ingest import ingest
    from training.bootstrap import BootstrapConfig

    work.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{work / 'bench.db'}"
    settings = Settings(
        data_dir=work, database_url=url, model_spec=model_spec, device="cpu", num_workers=1, index_refresh_seconds=0
    )
    upgrade(url)
    sf = make_session_factory(make_engine(url))
    with sf() as session:
        active = crud.get_active_model(session)
        n_items = crud.count_items(session)
    if active is None or not active.checkpoint_path:
        print(f"bootstrapping {model_spec} on {data / 'trainval.jsonl'}", flush=True)
        bootstrap_model(settings, sf, data / "trainval.jsonl", cfg=BootstrapConfig(num_workers=1))
    if n_items == 0:
        print(f"ingesting {what}", flush=True)
        print(ingest(items(), settings, sf).summary(), flush=True)
    return settings, sf


@contextmanager
def postgres_copy(sf, admin_url: str | None) -> Iterator[sessionmaker | None]:
    """A fresh PostgreSQL database on ``admin_url``'s server holding the same live items (same ids), or None."""
    if admin_url is None:
        yield None
        return
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"crossmodal_bench_hybrid_{os.getpid()}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        upgrade(url)
        with sf() as source, make_session_factory(engine)() as target:
            columns = (Item.id, Item.external_id, Item.source, Item.image_path, Item.text, Item.meta)
            rows = [r._asdict() for r in source.query(*columns).filter(Item.deleted_at.is_(None))]
            target.execute(insert(Item), [{**r, "meta": r["meta"]} for r in rows])
            target.commit()
        yield make_session_factory(engine)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def rank_of(ids: Sequence[int], relevant: set[int]) -> int | None:
    """1-based rank of the first relevant id, None when there is none."""
    return next((r for r, i in enumerate(ids, start=1) if i in relevant), None)


def scores(ranks: list[int | None]) -> dict[str, float]:
    n = max(len(ranks), 1)
    return {
        "R@1": sum(r == 1 for r in ranks) / n,
        "R@10": sum(r is not None and r <= 10 for r in ranks) / n,
        "nDCG@10": sum(1 / np.log2(r + 1) for r in ranks if r is not None and r <= 10) / n,
        "n": len(ranks),
    }


def lexical_list(sf, text: str, window: int) -> list[tuple[int, float]]:
    with sf() as session:
        return lexical.search(session, lexical.terms(text), "image", window)


def measure(state, sf, settings, queries: list[dict], window: int, pg_sf=None) -> tuple[dict, dict[str, list[int]]]:
    """Per (query set, subset): R@1, R@10 and nDCG@10 of vector, lexical and every fusion variant
    (and, with ``pg_sf``, lexical and the default fusion with PostgreSQL's lexical list); and each query
    text's first 10 ids under the default fusion, for :func:`service_agrees`."""
    ranks: dict[tuple[str, str, str], list[int | None]] = {}
    tops: dict[tuple[str, str], list[float]] = {}
    default_top10: dict[str, list[int]] = {}
    for q in queries:
        response, _ = run_search(
            state, sf, settings, QueryInput("text", q["text"]), SearchOptions(k=window, mode="vector")
        )
        vector = [(hit.id, hit.score) for hit in response.data]
        lex = lexical_list(sf, q["text"], window)
        rankings = {"vector": [i for i, _ in vector], "lexical": [i for i, _ in lex]}
        top = response.data[0].relevance if response.data else None  # None: the model has no calibration
        if top is not None:
            tops.setdefault((q["set"], q["subset"]), []).append(top)
        for label, fusion, k, w, swing in VARIANTS:
            weight = hybrid.vector_weight(w, swing, top)
            rankings[label] = [r.id for r in hybrid.fuse(vector, lex, fusion, k, weight)]  # type: ignore[arg-type]
        default_top10[q["text"]] = rankings[DEFAULT[0]][:10]
        if pg_sf is not None:
            pg = lexical_list(pg_sf, q["text"], window)
            rankings[PG_LEXICAL] = [i for i, _ in pg]
            _, fusion, k, w, swing = DEFAULT
            weight = hybrid.vector_weight(w, swing, top)
            rankings[PG_HYBRID] = [r.id for r in hybrid.fuse(vector, pg, fusion, k, weight)]
        for method, ids in rankings.items():
            ranks.setdefault((q["set"], q["subset"], method), []).append(rank_of(ids, q["relevant"]))
    out = {" | ".join(key): scores(r) for key, r in ranks.items()}
    for (query_set, subset), values in tops.items():  # how sure the model was of its first hit, per cell
        out[f"{query_set} | {subset} | top relevance"] = {"mean": float(np.mean(values)), "n": len(values)}
    return out, default_top10


def service_agrees(state, sf, settings, queries: list[dict], default_top10: dict[str, list[int]]) -> list[int]:
    """[same, of]: how many of ``queries`` the service's hybrid mode ranks (first 10 hits) exactly as the default
    row's fusion of the same two lists, computed by :func:`measure`."""
    same = 0
    for q in queries:
        served, _ = run_search(state, sf, settings, QueryInput("text", q["text"]), SearchOptions(k=10, mode="hybrid"))
        same += [hit.id for hit in served.data] == default_top10[q["text"]]
    return [same, len(queries)]


def latency(state, sf, settings, queries: list[dict], repeats: int) -> dict:
    """p50 and p90 milliseconds of run_search per mode (interleaved, same warm state), and p50 over vector's."""
    times: dict[str, list[float]] = {"vector": [], "lexical": [], "hybrid": []}
    for _ in range(repeats):
        for q in queries:
            for mode in times:
                t0 = time.perf_counter()
                run_search(state, sf, settings, QueryInput("text", q["text"]), SearchOptions(k=10, mode=mode))
                times[mode].append((time.perf_counter() - t0) * 1000)
    base = float(np.percentile(times["vector"], 50))
    return {
        mode: {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
               "p50_ratio": float(np.percentile(t, 50)) / base}
        for mode, t in times.items()
    }  # fmt: skip


def build_queries(sf, words) -> list[dict]:
    """Every reworded query of the ingested concepts, with its subset and its concept's item ids."""
    by_concept: dict[str, set[int]] = {}
    subset_of: dict[str, str] = {}
    with sf() as session:
        for batch in crud.iter_item_batches(session, 5000, modality="image"):
            for item in batch:
                meta = item.meta or {}
                by_concept.setdefault(meta["concept"], set()).add(item.id)
                subset_of[meta["concept"]] = meta["subset"]
    queries = []
    for concept, ids in sorted(by_concept.items()):
        if concept not in words:
            continue
        for name, wording in queries_for(*words[concept]).items():
            queries.append({"set": name, "subset": subset_of[concept], "text": wording, "relevant": ids})
    return queries


def n_items(sf) -> int:
    with sf() as session:
        return crud.count_items(session)


def _row(label: str, quality: dict, query_set: str) -> str:
    cells = []
    for subset in REPORTED:
        m = quality.get(f"{query_set} | {subset} | {label}", {})
        cells += [f"{m.get(k, float('nan')):.3f}" for k in ("R@1", "R@10", "nDCG@10")]
    return f"| {label} | " + " | ".join(cells) + " |"


def _against_best(quality: dict, query_set: str, subset: str, metric: str) -> str:
    got = {
        m: quality.get(f"{query_set} | {subset} | {m}", {}).get(metric, 0.0)
        for m in ("vector", "lexical", VARIANTS[0][0])
    }
    best = max(("vector", "lexical"), key=lambda m: got[m])
    hybrid_value = got[VARIANTS[0][0]]
    return f"{metric} {hybrid_value:.3f} vs {best} {got[best]:.3f} ({hybrid_value - got[best]:+.3f})"


def markdown(result: dict) -> str:
    quality = result["quality"]
    head = " | ".join(f"{name} {k}" for name in REPORTED.values() for k in ("R@1", "R@10", "nDCG@10"))
    lines = [
        "## Hybrid search on real data (`benchmarks/bench_hybrid.py`)",
        "",
        f"{result['items']} {result['house']} drawings (one per concept), model `{result['model']}` bootstrapped on "
        f"trainval; text = the CLDR name, metadata = house, codepoint, category, subcategory, family, subset. "
        "Queries never use the name: " + ", ".join(f"{n} {s}" for s, n in result["queries"].items()) + "."
        f" Each list read {result['window']} deep. Hit = the query's concept.",
        "",
        f"Reproduce: `{result['command']}`",
    ]
    for query_set in SETS:
        n = {s: quality.get(f"{query_set} | {s} | vector", {}).get("n", 0) for s in REPORTED}
        counts = ", ".join(f"{REPORTED[s]} {n[s]}" for s in REPORTED)
        lines += ["", f"Queries: {query_set} ({counts})", "", f"| method | {head} |", "|---" * 7 + "|"]
        labels = ["vector", "lexical", *(v[0] for v in VARIANTS), PG_LEXICAL, PG_HYBRID]
        lines += [_row(label, quality, query_set) for label in labels if f"{query_set} | train | {label}" in quality]
    lines += ["", f"Hybrid ({VARIANTS[0][0]}) against the better single list (vector or lexical) of each cell:", ""]
    for query_set in SETS:
        for subset, name in REPORTED.items():
            lines.append(
                f"- {query_set}, {name}: "
                + "; ".join(_against_best(quality, query_set, subset, m) for m in ("R@10", "R@1"))
            )
    tops = [
        f"{query_set}, {name} {quality[key]['mean']:.2f}"
        for query_set in SETS
        for subset, name in REPORTED.items()
        if (key := f"{query_set} | {subset} | top relevance") in quality
    ]
    if tops:
        lines += ["", "Mean calibrated relevance of the vector list's first hit: " + "; ".join(tops) + "."]
    if "service_agrees" in result:
        same, of = result["service_agrees"]
        lines += ["", f"The service's hybrid mode (`run_search`) ranked the first 10 hits of {same} of {of} sampled "
                  "queries exactly as the default row's fusion computed here."]  # fmt: skip
    lines += ["", "Latency of `run_search` (k=10, SQLite, batcher on), p50 over vector mode's in the same run:"]
    lines += ["", "| query | mode | p50 ms | p90 ms | p50 / vector |", "|---|---|---|---|---|"]
    for how, modes in result["latency"].items():
        for mode, t in modes.items():
            lines.append(f"| {how} | {mode} | {t['p50_ms']:.2f} | {t['p90_ms']:.2f} | {t['p50_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--house", default="google")
    ap.add_argument("--work", type=Path, default=Path("/tmp/crossmodal-bench-hybrid"), help="reused between runs")
    ap.add_argument("--model", default=Settings.model_fields["model_spec"].default)
    ap.add_argument("--window", type=int, default=Settings.model_fields["hybrid_window"].default)
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--latency-repeats", type=int, default=3)
    ap.add_argument("--npm-cache", type=Path, default=None)
    pg_help = "also rank lexically on PostgreSQL: a URL on its server (a database is created there and dropped)"
    ap.add_argument("--postgres", default=None, help=pg_help + ", e.g. postgresql+psycopg://postgres@127.0.0.1/test")
    ap.add_argument("--no-record", action="store_true", help="print, do not write docs/benchmarks.md")
    ap.add_argument("--report-only", type=Path, default=None, help="re-render a results JSON, measuring nothing")
    args = ap.parse_args(argv)
    if args.report_only is not None:
        result = json.loads(args.report_only.read_text())
        record(
            "hybrid-search",
            {k: v for k, v in result.items() if k not in ("benchmark", "date", "machine")},
            markdown(result),
        )
        return result
    settings, sf = service(args.work, args.data, args.house, args.model)
    queries = build_queries(sf, concept_words(args.npm_cache))
    state = SearchState(settings, sf)
    state.refresh(force=True)
    t0 = time.perf_counter()
    with postgres_copy(sf, args.postgres) as pg_sf:
        quality, default_top10 = measure(state, sf, settings, queries, args.window, pg_sf)
    rng = np.random.default_rng(0)
    sample = [queries[i] for i in rng.permutation(len(queries))[: args.latency_queries]]
    agrees = service_agrees(state, sf, settings, sample, default_top10)
    timing = {"query vector cached": latency(state, sf, settings, sample, args.latency_repeats)}
    state.query_cache = QueryCache(0)  # every query encoded, as a first search of a text is
    timing["query encoded"] = latency(state, sf, settings, sample, args.latency_repeats)
    state.stop()
    result = {
        "house": args.house,
        "model": state.snapshot.model_spec,
        "items": n_items(sf),
        "window": args.window,
        "queries": {s: sum(q["set"] == s for q in queries) for s in SETS},
        "quality": quality,
        "latency": timing,
        "service_agrees": agrees,
        "seconds": round(time.perf_counter() - t0, 1),
        "command": "python benchmarks/bench_hybrid.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    report = markdown(result)
    print(report)
    if not args.no_record:
        record("hybrid-search", result, report)
    return result


if __name__ == "__main__":
    main()
