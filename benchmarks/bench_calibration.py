"""Calibrated relevance on real data: ``min_relevance: 0.5`` against the best fixed ``min_score`` (issue 24).

The emoji set's drawings by ``--houses`` (default all four: 3-4 drawings of each concept) are ingested
into a temporary service whose model is bootstrapped on ``trainval.jsonl``, as ``crossmodal
bootstrap`` does; each item's text is its CLDR name and its metadata the manifest's columns. A hit
is relevant when it is a drawing (text -> image) or a name (image -> text) of the query's concept.

Two calibrations, each fitted the way the service fits one (``app.pipelines.calibration``):

- ``bootstrap``: on the bootstrap's held-out pairs (``trainval.jsonl``'s val split: the training
  houses' drawings of the validation concepts), the calibration a bootstrapped model starts with;
- ``db``: on the database's held-out items (the stable hash split) ranked against the whole
  collection, what a promotion (or an ingest on a model without a set of its own) stores.

Held-out queries: the concepts that neither fit saw (no item in the db split, not a validation
concept), worded as the captions are (``name``) and as people word them instead (``short name``,
``keywords``, ``other keywords``: benchmarks/bench_hybrid.py), text -> image, and each of their
drawings as an image -> text query. For each query its returned set is its top ``--window`` hits
with relevance at least 0.5, against those scoring at least a fixed ``min_score`` chosen on the
same fit set (the one maximising mean per-query F1 there), and the best fixed ``min_score`` in
hindsight (chosen on the held-out queries themselves). Per-query precision, recall and F1, then
their means; the reliability curve (10 bins) and the expected calibration error over the held-out
queries' top 50 hits. Variants of the fit (Platt or isotonic, per query or on the cosine alone) are
fitted on the same judged hits. The service path is checked on a sample: ``run_search`` with
``min_relevance: 0.5`` returns exactly the offline set.

    .venv/bin/python benchmarks/bench_calibration.py --data data/emoji
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

from app.config import Settings  # noqa: E402
from app.db import crud  # noqa: E402
from app.db.models import Model  # noqa: E402
from app.pipelines import calibration as pc  # noqa: E402
from benchmarks._calibration_report import LEVEL, markdown  # noqa: E402
from benchmarks._report import record  # noqa: E402
from benchmarks.bench_hybrid import bootstrapped_service, concept_words, queries_for  # noqa: E402
from training import calibration as cal  # noqa: E402
from training.calibration_sets import direction_sets  # noqa: E402

HOUSES = ("apple", "google", "twitter", "facebook")
VARIANTS = (("platt", True), ("isotonic", True), ("platt", False), ("isotonic", False))


def manifest(data: Path, houses: tuple[str, ...], out: Path) -> Path:
    """Every drawing of ``houses`` (each subset's per-house file) as one JSONL manifest, captions left out."""
    rows = []
    for house in houses:
        for path in sorted((data / "eval").glob(f"*-{house}.jsonl")):
            for line in path.read_text().splitlines():
                row = json.loads(line)
                row.pop("captions", None)
                row["image"] = str((path.parent / row["image"]).resolve())
                rows.append(row)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def service(work: Path, data: Path, houses: tuple[str, ...], model_spec: str):
    """Settings and a session factory of a service holding the drawings, bootstrapped once per ``work``."""
    return bootstrapped_service(
        work, data, model_spec, f"{', '.join(houses)}'s drawings", lambda: manifest(data, houses, work / "items.jsonl")
    )


@dataclass
class Lists:
    """Each query's top hits, best first: cosines, which are relevant, and how many relevant items exist."""

    scores: np.ndarray  # (queries, window)
    relevant: np.ndarray  # (queries, window) bool
    positives: np.ndarray  # (queries,)
    wording: np.ndarray  # (queries,) str
    texts: np.ndarray | None = None  # (queries,) the query texts, text queries only

    def only(self, mask: np.ndarray) -> Lists:
        texts = None if self.texts is None else self.texts[mask]
        return Lists(self.scores[mask], self.relevant[mask], self.positives[mask], self.wording[mask], texts)


def rank(queries: np.ndarray, pool: np.ndarray, relevant: list[set[int]], window: int, wording) -> Lists:
    sims = queries @ pool.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :window]
    hits = np.array([[int(i) in relevant[q] for i in row] for q, row in enumerate(top)], dtype=bool)
    return Lists(np.take_along_axis(sims, top, 1).astype(np.float64), hits,
                 np.array([len(r) for r in relevant]), np.asarray(wording))  # fmt: skip


def from_judged(judged: cal.Judged, window: int) -> Lists:
    """:class:`Lists` of judged hits (each query's top ``window``, as :func:`training.calibration.judge` ranks)."""
    scores = np.full((judged.queries, window), -np.inf)
    hits = np.zeros((judged.queries, window), dtype=bool)
    for q in range(judged.queries):
        mine = judged.query == q
        scores[q, : mine.sum()], hits[q, : mine.sum()] = judged.scores[mine], judged.relevant[mine]
    return Lists(scores, hits, judged.positives_per_query, np.array(["fit"] * judged.queries))


def quality(keep: np.ndarray, lists: Lists) -> dict[str, float]:
    """Per-query precision, recall and F1 of the returned sets (``keep``), averaged; an empty set has P = 0."""
    tp = (keep & lists.relevant).sum(1)
    returned = keep.sum(1)
    p = np.where(returned > 0, tp / np.maximum(returned, 1), 0.0)
    r = tp / np.maximum(lists.positives, 1)
    f1 = np.where(tp > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return {"P": float(p.mean()), "R": float(r.mean()), "F1": float(f1.mean()), "returned": float(returned.mean()),
            "n": len(tp)}  # fmt: skip


def best_fixed(lists: Lists) -> float:
    """The single ``min_score`` with the best mean per-query F1 on ``lists``."""
    candidates = np.unique(np.round(lists.scores[np.isfinite(lists.scores)], 4))
    return float(max(candidates, key=lambda t: quality(lists.scores >= t, lists)["F1"]))


def relevance(mapping: cal.Calibration, lists: Lists) -> np.ndarray:
    return mapping(lists.scores, level(lists.scores))


def level(scores: np.ndarray) -> np.ndarray:
    """Each query's level (``training.calibration``): the mean of its best cosines, its first hits'."""
    return scores[:, : cal.LEVEL_DEPTH].mean(axis=1, keepdims=True)


def calibration_figures(mapping: cal.Calibration, lists: Lists, depth: int = cal.DEPTH) -> dict:
    p, y = relevance(mapping, lists)[:, :depth].ravel(), lists.relevant[:, :depth].ravel()
    return {"ece": cal.expected_calibration_error(p, y), "brier": cal.brier(p, y), "curve": cal.reliability(p, y)}


def held_out_queries(settings, sf, model_id: int, words, fit_concepts: set[str], window: int) -> dict[str, Lists]:
    """Text -> image (each wording) and image -> text lists of the concepts no fit saw, over the collection."""
    from app.encoders import load_encoder
    from app.pipelines.publish import embeddings_dir
    from index import shards

    with sf() as session:
        items = {i.id: i for batch in crud.iter_item_batches(session, 5000) for i in batch}
    spec = _spec(sf, model_id)
    pools = {m: shards.load_all(embeddings_dir(settings, model_id, m)) for m in ("image", "text")}
    concept_of = {m: [(items[int(i)].meta or {})["concept"] for i in pools[m][0]] for m in pools}
    members: dict[str, dict[str, set[int]]] = {m: {} for m in pools}  # concept -> pool rows
    for m, concepts in concept_of.items():
        for row, c in enumerate(concepts):
            members[m].setdefault(c, set()).add(row)
    held = sorted(c for c in members["image"] if c not in fit_concepts and c in words)
    texts, relevant, wording = [], [], []
    for c in held:
        name, short, keywords = words[c]
        for label, text in {"name": name, **queries_for(name, short, keywords)}.items():
            texts.append(text)
            relevant.append(members["image"][c])
            wording.append(label)
    encoder = load_encoder(settings, spec)
    t2i = rank(encoder.encode_texts(texts), pools["image"][1], relevant, window, wording)
    t2i.texts = np.asarray(texts)
    rows = [r for c in held for r in sorted(members["image"][c])]
    i2t = rank(pools["image"][1][rows], pools["text"][1], [members["text"][concept_of["image"][r]] for r in rows],
               window, ["image"] * len(rows))  # fmt: skip
    return {"text->image": t2i, "image->text": i2t}


def held_out_split(manifest: Path) -> dict[str, str]:
    """The set a bootstrap on ``manifest`` evaluates and calibrates on (app.pipelines.bootstrap's rule)."""
    from training.eval_sets import manifest_pairs

    split = "test" if len(manifest_pairs(manifest, "test")) else "val"
    return {"dataset": str(manifest.resolve()), "split": split}


def fit_sets(settings, sf, model_id: int, bootstrap_set: dict) -> dict[str, dict[str, cal.Direction]]:
    """The two fit sets' directions, built as the service builds them."""
    db = pc.db_set(sf)
    vectors = pc._Vectors(settings, _spec(sf, model_id))
    pairs = pc.manifest_set(bootstrap_set["dataset"], bootstrap_set["split"])
    return {
        "bootstrap": direction_sets(pairs, vectors.images(pairs.images), vectors.texts),
        "db": pc.collection_directions(settings, model_id, db) or {},
    }


def _spec(sf, model_id: int) -> str:
    with sf() as session:
        model = session.get(Model, model_id)
        assert model is not None
        return model.spec


def measure(fits: dict[str, dict[str, cal.Direction]], held: dict[str, Lists], window: int) -> dict:
    """Every fit set x direction x variant on the held-out lists, with the fixed-cutoff baselines."""
    out: dict = {}
    for fit_name, directions in fits.items():
        for direction, lists in held.items():
            judged = cal.judge(directions[direction], window)
            fit_lists = from_judged(judged, window)
            fixed = best_fixed(fit_lists)
            at_depth = cal.Judged(*_cut(judged, cal.DEPTH))
            cell: dict = {"fit_queries": judged.queries, "fixed_min_score": fixed, "variants": {}}
            for method, adaptive in VARIANTS:
                mapping, _ = cal.fit(at_depth, method, adaptive)
                keep = relevance(mapping, lists) >= LEVEL
                cell["variants"][f"{method}, {'per query' if adaptive else 'cosine only'}"] = {
                    "beta": mapping.beta, "threshold_at_level_0.5": mapping.threshold(LEVEL, 0.5),
                    **_by_wording(keep, lists), **{"calibration": calibration_figures(mapping, lists)},
                }  # fmt: skip
            cell["fixed"] = _by_wording(lists.scores >= fixed, lists)
            out[f"{fit_name} | {direction}"] = cell
    for direction, lists in held.items():
        out[f"hindsight | {direction}"] = {
            w: {"min_score": (t := best_fixed(part)), **quality(part.scores >= t, part)}
            for w, part in _parts(lists).items()
        }
        out[f"top hit | {direction}"] = _by_wording(np.arange(window)[None, :] < 1, lists)
    return out


def _cut(judged: cal.Judged, depth: int) -> tuple:
    rank_in_query = np.zeros(len(judged), dtype=np.int64)
    for q in range(judged.queries):
        mine = np.nonzero(judged.query == q)[0]
        rank_in_query[mine] = np.arange(len(mine))
    keep = rank_in_query < depth
    return (judged.scores[keep], judged.relevant[keep], judged.query[keep], judged.level[keep], judged.queries,
            judged.positives_per_query)  # fmt: skip


def _parts(lists: Lists) -> dict[str, Lists]:
    return {"all": lists, **{w: lists.only(lists.wording == w) for w in dict.fromkeys(lists.wording.tolist())}}


def _by_wording(keep: np.ndarray, lists: Lists) -> dict[str, dict[str, float]]:
    keep = np.broadcast_to(keep, lists.scores.shape)
    return {w: quality(keep[lists.wording == w] if w != "all" else keep, part) for w, part in _parts(lists).items()}


def service_check(settings, sf, texts: list[str], window: int, repeats: int = 3) -> dict:
    """On the service as it runs (the stored calibration, vector mode): every hit's relevance is the stored map
    of its cosine and its query's level, and ``min_relevance: 0.5`` returns exactly the hits at or above 0.5.
    Then the cost: ``run_search`` p50 per mode (k=10, text vectors cached) with the calibration and with none,
    interleaved on the same warm state."""
    import dataclasses

    from app.serving.query import QueryInput, run_search
    from app.serving.relevance import load_relevance
    from app.serving.schemas import SearchOptions
    from app.serving.state import SearchState

    state = SearchState(settings, sf)
    state.refresh(force=True)
    mapping, _ = state.snapshot.relevance.mapping("text", "image")
    assert mapping is not None, "the service has no text->image calibration"
    agree = 0
    for text in texts:
        every, _ = run_search(state, sf, settings, QueryInput("text", text), SearchOptions(k=window, mode="vector"))
        cut, _ = run_search(state, sf, settings, QueryInput("text", text),
                            SearchOptions(k=window, mode="vector", min_relevance=LEVEL))  # fmt: skip
        scores = np.array([h.score for h in every.data])
        expected = mapping(scores, scores[: cal.LEVEL_DEPTH].mean()) if len(scores) else scores
        got = [np.nan if h.relevance is None else h.relevance for h in every.data]
        same_values = np.allclose(got, expected, atol=1e-9)
        same_set = [h.id for h in cut.data] == [h.id for h, p in zip(every.data, expected, strict=True) if p >= LEVEL]
        agree += bool(same_values and same_set)
    snapshots = {"calibrated": state.snapshot,
                 "none": dataclasses.replace(state.snapshot, relevance=load_relevance(None))}  # fmt: skip
    times: dict[str, list[float]] = {f"{m} | {c}": [] for m in ("vector", "lexical", "hybrid") for c in snapshots}
    for _ in range(repeats):
        for text in texts:
            for key in times:
                mode, which = key.split(" | ")
                state.snapshot = snapshots[which]
                t0 = time.perf_counter()
                run_search(state, sf, settings, QueryInput("text", text), SearchOptions(k=10, mode=mode))
                times[key].append((time.perf_counter() - t0) * 1000)
    state.stop()
    p50 = {k: float(np.percentile(v, 50)) for k, v in times.items()}
    return {"queries": len(texts), "agree": agree, "p50_ms": p50}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--houses", default=",".join(HOUSES))
    ap.add_argument("--work", type=Path, default=Path("/tmp/crossmodal-bench-calibration"), help="reused between runs")
    ap.add_argument("--model", default=Settings.model_fields["model_spec"].default)
    ap.add_argument("--window", type=int, default=100, help="the most hits a query returns")
    ap.add_argument("--service-queries", type=int, default=100)
    ap.add_argument("--npm-cache", type=Path, default=None)
    ap.add_argument("--no-record", action="store_true", help="print, do not write docs/benchmarks.md")
    ap.add_argument("--report-only", type=Path, default=None, help="re-render a results JSON, measuring nothing")
    args = ap.parse_args(argv)
    if args.report_only is not None:
        result = json.loads(args.report_only.read_text())
        kept = {k: v for k, v in result.items() if k not in ("benchmark", "date", "machine")}
        record("hybrid-search-calibration", kept, markdown(result))
        return result
    houses = tuple(h for h in args.houses.split(",") if h)
    settings, sf = service(args.work, args.data, houses, args.model)
    t0 = time.perf_counter()
    with sf() as session:
        model = crud.get_active_model(session)
        assert model is not None, "the service has no active model"
        model_id, spec, n = model.id, model.spec, crud.count_items(session)
    bootstrap_set = held_out_split(args.data / "trainval.jsonl")
    db_record = pc.ensure_calibration(settings, sf, model_id, dataset="db", force=True)  # what a promotion stores
    fits = fit_sets(settings, sf, model_id, bootstrap_set)
    fit_concepts = set(pc.manifest_set(bootstrap_set["dataset"], bootstrap_set["split"]).concepts or [])
    fit_concepts |= {k for d in (fits["db"].get("text->image"),) if d is not None for ks in d.query_keys for k in ks}
    held = held_out_queries(settings, sf, model_id, concept_words(args.npm_cache), fit_concepts, args.window)
    quality_ = measure(fits, held, args.window)
    names = held["text->image"].only(held["text->image"].wording == "name").texts
    assert names is not None
    texts = [str(t) for t in names[:: max(1, len(names) // args.service_queries)][: args.service_queries]]
    result = {
        "houses": houses, "model": spec, "items": n, "window": args.window, "default": _default_variant(settings),
        "held_concepts": int((held["text->image"].wording == "name").sum()), "quality": quality_,
        "db_calibration": {k: v for k, v in db_record.items() if k != "directions"},
        "service": service_check(settings, sf, texts, args.window), "seconds": round(time.perf_counter() - t0, 1),
        "command": "python benchmarks/bench_calibration.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }  # fmt: skip
    report = markdown(result)
    print(report)
    if not args.no_record:
        record("hybrid-search-calibration", result, report)
    return result


def _default_variant(settings: Settings) -> str:
    return f"{settings.calibration_method}, per query"


if __name__ == "__main__":
    main()
