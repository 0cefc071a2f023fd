"""Composite queries on real data: how a negative or a positive part moves ranks (issue 24).

The service of ``bench_hybrid.py`` (one house's drawings, ``--house`` google, one per concept,
text = the CLDR name; the default model bootstrapped on ``trainval.jsonl``; the same ``--work``
folder, so a run after it reuses its model and items). Queries are chosen by rule, not by hand:
every pair of ingested concepts X and Y whose CLDR names differ by one added word B, not a stop
word ("cat" and "cat face", B = "face"; "dog" and "guide dog", B = "guide"), or a seeded sample of
``--pairs`` of them. For each pair, through ``run_composite`` (the service's path), every image
ranked:

- ``X``: the base query, the text X alone;
- ``X − B`` / ``X + B``: text X at 1 and text B at −w / +w: should push Y (X's "B" version) down
  and X up / pull Y up;
- ``X − item Y`` / ``X + item Y``: text X at 1 and Y's drawing at −w / +w ("less like this" /
  "more like this" on Y in the web UI).

Per variant: the median rank of X's and of Y's drawing (1 = first of all images), how often Y
moved the intended way against the base query, how often the intended one of the two ranks above
the other (minus: X above Y; plus: Y above X) and is in the top 10. A rule-free alternative the
service does not run is scored beside it on the same vectors (numpy, exact): ``standardised``,
each part's weight divided by the spread (standard deviation over all images) of its cosine, so
that an image part, whose cosines spread far wider than a text's, does not outweigh a text at the
same weight.

    .venv/bin/python benchmarks/bench_composite.py --data data/emoji --house google
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import Settings  # noqa: E402
from app.db import crud, lexical  # noqa: E402
from app.serving.composite import Part, combine, run_composite  # noqa: E402
from app.serving.schemas import SearchOptions  # noqa: E402
from app.serving.state import SearchState  # noqa: E402
from benchmarks._report import record  # noqa: E402
from benchmarks.bench_hybrid import n_items, service  # noqa: E402  (it applies the runtime defaults)

VARIANTS = ("X - B", "X + B", "X - item Y", "X + item Y")


def pairs_of(names: dict[int, str], limit: int, seed: int) -> list[tuple[int, int, str]]:
    """(X's item, Y's item, B) for every two items whose names differ by one added word B (no stop word)."""
    words = {i: re.findall(r"[^\W_]+", n.lower()) for i, n in names.items()}
    by_words = {tuple(w): i for i, w in sorted(words.items(), reverse=True)}  # the lowest id of a name wins
    found = []
    for y, wy in sorted(words.items()):
        for at in range(len(wy)):
            extra, rest = wy[at], tuple(wy[:at] + wy[at + 1 :])
            x = by_words.get(rest)
            if rest and x is not None and x != y and extra not in lexical.STOP_WORDS:
                found.append((x, y, extra))
    found = sorted(set(found))
    if len(found) > limit:
        keep = np.random.default_rng(seed).choice(len(found), size=limit, replace=False)
        found = [found[i] for i in sorted(keep)]
    return found


def image_items(sf) -> dict[int, str]:
    """Each ingested image item's text (its CLDR name), by id."""
    with sf() as session:
        return {
            it.id: it.text or "" for batch in crud.iter_item_batches(session, 5000, modality="image") for it in batch
        }


def variant_parts(x_name: str, y: int, extra: str, variant: str, w: float) -> list[Part]:
    base = Part("text", x_name, 1.0)
    sign = -1.0 if " - " in variant else 1.0
    other = Part("item", y, sign * w) if "item" in variant else Part("text", extra, sign * w)
    return [base, other]


def service_ranks(state, sf, settings, parts: list[Part], ids: tuple[int, int], k: int) -> tuple[int, int]:
    """The 1-based ranks of ``ids`` among all images, by the service (``k`` = every image)."""
    response, _ = run_composite(state, sf, settings, parts, SearchOptions(k=k, mode="vector"))
    order = {hit.id: r for r, hit in enumerate(response.data, start=1)}
    return order.get(ids[0], k + 1), order.get(ids[1], k + 1)


class Exact:
    """Every image vector, for the numpy variants: exact ranks of a query vector, ties by id."""

    def __init__(self, state, ids: list[int]):
        snap = state.snapshot
        self.ids = np.asarray(sorted(ids), dtype=np.int64)
        self.vectors = np.asarray(snap.indexes["image"].index.index.reconstruct_batch(self.ids), dtype=np.float64)
        self.position = {int(i): p for p, i in enumerate(self.ids)}
        self.encoder = snap.encoder
        self.texts: dict[str, np.ndarray] = {}

    def unit(self, part: Part) -> np.ndarray:
        if part.kind == "item":
            v = self.vectors[self.position[part.item]]
        else:
            if part.text not in self.texts:
                self.texts[part.text] = np.asarray(self.encoder.encode_texts([part.text])[0], dtype=np.float64)
            v = self.texts[part.text]
        return v / np.linalg.norm(v)

    def ranks(self, q: np.ndarray, of: tuple[int, int]) -> tuple[int, int]:
        scores = (self.vectors @ q).astype(np.float32)
        order = np.lexsort((self.ids, -scores))
        rank = {int(self.ids[j]): r for r, j in enumerate(order, start=1)}
        return rank[of[0]], rank[of[1]]

    def standardised(self, parts: list[Part]) -> np.ndarray:
        units = np.stack([self.unit(p) for p in parts])
        spread = (self.vectors @ units.T).std(axis=0)
        return combine(units, [p.weight / s for p, s in zip(parts, spread, strict=True)]).astype(np.float64)


def measure(state, sf, settings, pairs, names: dict[int, str], weights: list[float]) -> dict:
    """Per pair: the base ranks and, per (variant, weight, combination), the ranks of X and Y."""
    k = len(names)
    settings.max_k = max(settings.max_k, k)  # every image ranked, as the exact numpy ranks are
    exact = Exact(state, list(names))
    rows, agree, total = [], 0, 0
    for x, y, extra in pairs:
        base = service_ranks(state, sf, settings, [Part("text", names[x], 1.0)], (x, y), k)
        row = {"x": names[x], "y": names[y], "b": extra, "base": base, "runs": {}}
        for variant in VARIANTS:
            for w in weights:
                parts = variant_parts(names[x], y, extra, variant, w)
                got = service_ranks(state, sf, settings, parts, (x, y), k)
                plain = exact.ranks(
                    combine(np.stack([exact.unit(p) for p in parts]), [p.weight for p in parts]), (x, y)
                )
                agree, total = agree + (plain == got), total + 1
                row["runs"][f"{variant} | {w:g} | weighted sum"] = got
                row["runs"][f"{variant} | {w:g} | standardised"] = exact.ranks(exact.standardised(parts), (x, y))
        rows.append(row)
    return {"rows": rows, "service_matches_exact": [agree, total], "k": k}


def summary(rows: list[dict]) -> dict[str, dict]:
    """Per run label: median ranks, Y moved as intended, intended order, intended one in the top 10."""
    out = {"X | base | -": _stats([r["base"] for r in rows], [r["base"] for r in rows], None)}
    for label in rows[0]["runs"]:
        out[label] = _stats([r["runs"][label] for r in rows], [r["base"] for r in rows], " + " in label)
    return out


def _stats(ranks: list[tuple[int, int]], base: list[tuple[int, int]], plus: bool | None) -> dict:
    x, y = np.array([r[0] for r in ranks]), np.array([r[1] for r in ranks])
    bx, by = np.array([b[0] for b in base]), np.array([b[1] for b in base])
    wanted = y if plus else x  # the one the variant should lift: Y for a plus, X for a minus (and the base)
    other = x if plus else y
    moved = (y < by) if plus else (y > by)
    return {
        "median rank X": float(np.median(x)), "median rank Y": float(np.median(y)),
        "Y moved as intended": None if plus is None else float(moved.mean()),
        "X moved up or stayed": float((x <= bx).mean()),
        "intended order": float((wanted < other).mean()), "intended in top 10": float((wanted <= 10).mean()),
        "n": len(ranks),
    }  # fmt: skip


def markdown(result: dict) -> str:
    s = result["summary"]
    agree, total = result["service_matches_exact"]
    lines = [
        "## Composite queries on real data (`benchmarks/bench_composite.py`)",
        "",
        f"{result['items']} {result['house']} drawings (one per concept), model `{result['model']}`. "
        f"{result['n_pairs']} pairs of concepts X, Y whose CLDR names differ by one added word B, chosen by that "
        f"rule ({result['n_candidates']} such pairs; a seeded sample of {result['n_pairs']} when more). "
        f"Each query ranks all {result['k']} images; ranks are 1-based. `X − B`: text X at 1 and text B at −w; "
        "`item Y`: Y's own drawing as "
        'a part ("more / less like this"). Intended: a minus variant lifts X above Y, a plus variant Y above X. '
        f"`weighted sum` is the service's combination ({agree}/{total} of its rankings equal to numpy's exact "
        "ones); `standardised` divides each weight by the spread of its part's cosines over all images (not served).",
        "",
        f"Reproduce: `{result['command']}` (the measurement took {result['measure_seconds']:.0f} s; a first run also "
        "bootstraps the model and ingests the drawings, reusing bench_hybrid's `--work` when it is there)",
        "",
        "| query | w | combination | median rank X | median rank Y | Y moved as intended | X up or same "
        "| intended order | intended in top 10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in s.items():
        variant, w, how = label.split(" | ")
        moved = "–" if m["Y moved as intended"] is None else f"{m['Y moved as intended']:.2f}"
        lines.append(
            f"| {variant} | {w} | {how} | {m['median rank X']:g} | {m['median rank Y']:g} | {moved} | "
            f"{m['X moved up or stayed']:.2f} | {m['intended order']:.2f} | {m['intended in top 10']:.2f} |"
        )
    w = result["example_weight"]
    lines += ["", f"Examples (the first 12 pairs by name; rank of X / rank of Y; w = {w:g}, weighted sum):", ""]
    lines += ["| X | Y | X | X − B | X + B | X − item Y | X + item Y |", "|---|---|---|---|---|---|---|"]
    for r in sorted(result["rows"], key=lambda r: (r["x"], r["y"]))[:12]:
        cells = [f"{a} / {b}" for a, b in [r["base"], *(r["runs"][f"{v} | {w:g} | weighted sum"] for v in VARIANTS)]]
        lines.append(f"| {r['x']} | {r['y']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--house", default="google")
    ap.add_argument("--work", type=Path, default=Path("/tmp/crossmodal-bench-hybrid"), help="bench_hybrid's, reused")
    ap.add_argument("--model", default=Settings.model_fields["model_spec"].default)
    ap.add_argument("--pairs", type=int, default=48, help="at most this many pairs (a seeded sample when more)")
    ap.add_argument("--weights", default="0.25,0.5,1", help="the |w| of the second part, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-record", action="store_true", help="print, do not write docs/benchmarks.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    settings, sf = service(args.work, args.data, args.house, args.model)
    names = image_items(sf)
    candidates = pairs_of(names, 10**9, args.seed)
    pairs = pairs_of(names, args.pairs, args.seed)
    weights = [float(w) for w in args.weights.split(",")]
    state = SearchState(settings, sf)
    state.refresh(force=True)
    t1 = time.perf_counter()
    measured = measure(state, sf, settings, pairs, names, weights)
    measure_seconds = round(time.perf_counter() - t1, 1)
    state.stop()
    result = {
        "house": args.house,
        "model": state.snapshot.model_spec,
        "items": n_items(sf),
        "n_candidates": len(candidates),
        "n_pairs": len(pairs),
        "weights": weights,
        "example_weight": 0.5 if 0.5 in weights else weights[0],
        "measure_seconds": measure_seconds,
        **measured,
        "summary": summary(measured["rows"]),
        "seconds": round(time.perf_counter() - t0, 1),
        "command": " ".join(["python benchmarks/bench_composite.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    report = markdown(result)
    print(report)
    print(json.dumps({"seconds": result["seconds"]}))
    if not args.no_record:
        record("hybrid-search-composite", result, report)
    return result


if __name__ == "__main__":
    main()
