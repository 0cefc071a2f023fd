"""The markdown section bench_index writes for a ladder run (docs/benchmarks.md)."""

from __future__ import annotations


def _mib(b) -> str:
    return f"{b / 2**20:,.0f} MiB" if b else "—"


def _title(res: dict, args) -> str:
    if res["dataset"] == "mixture":
        return (f"{res['n']:,} x {res['d']} vectors from a {args.components:,}-component Gaussian mixture "
                f"(noise {args.noise})")  # fmt: skip
    return f"{res['n']:,} `builtin:lit-mini` image embeddings ({res['d']}-d) of the synthetic world"


def _calibration(q: dict) -> list[str]:
    if "noise" not in q:
        return []
    t, c, f = q["targets"], q["calibration_ratios"], q["ratios_full"]
    return [
        "Text-like queries (`benchmarks/_ood.py`): `normalise(x + noise·ε + gap·u)`, with noise "
        f"{q['noise']:g} and gap {q['gap']:g} picked on a grid so that two neighbour-structure statistics, as "
        "ratios to image-like queries, match real caption queries against real image embeddings "
        f"({q['target_source']}): answers' mutual similarity (*spread*) {t['spread']:.3f} and the share of the "
        f"answers among the nearest hit's own 100 neighbours (*overlap*) {t['overlap']:.3f}. Got "
        f"{c['spread']:.3f} / {c['overlap']:.3f} on the calibration queries and {f['spread']:.3f} / "
        f"{f['overlap']:.3f} on the evaluation ones (absolute top-1 cosine {q['text_stats']['top1']:.3f} text-like vs "
        f"{q['image_stats']['top1']:.3f} image-like).",
        "",
    ]


def _own_build_s(chosen: dict, rows: list[dict]) -> float:
    """What building the published rung alone takes: the query-aware rung is measured as edges added to a copy
    of the hnsw_pca rung's graph, so its own build is that graph's plus the edges'."""
    graph = next((r for r in rows if r.get("kind") == "hnsw_pca"), None)
    return chosen["build_s"] + (graph["build_s"] if chosen.get("kind") == "hnsw_qa" and graph else 0.0)


def ladder_report(res: dict, args) -> str:
    rows, k, target, q = res["rows"], res["k"], res["target_recall"], res["queries"]
    served, same = q["served"], q["same"]
    torch = next(r for r in rows if r["name"].startswith("exact, torch"))
    chosen = next(r for r in rows if r.get("chosen"))
    qa = next((r for r in rows if r.get("kind") == "hnsw_qa"), None)
    used = (qa or {}).get("extra", {}).get("query_edges", {}).get("training_queries", args.train_queries)
    own_build = _own_build_s(chosen, rows)
    lines = [
        f"### Index, {res['dataset']} data, {res['budget_bytes'] / 2**30:g} GiB budget "
        f"(`benchmarks/bench_index.py --dataset {res['dataset']}`)",
        "",
        f"{_title(res, args)}. The service's measured ladder (`index.ladder`) tuned every rung to recall@{k} ≥ "
        f"{target} on {args.queries} held-out {served} queries (the query-aware rung learnt its edges from "
        f"{used:,} of {args.train_queries:,} others: the `QA_WORK` budget) and published the fastest; each rung "
        "is then measured here on "
        f"{args.queries} other {served} queries and {args.queries} {same} ones. Single = one query a call, batch "
        "= 64 a call, 2 threads; QPS ratios are against torch matmul + `topk` exact search in this run.",
        "",
        *_calibration(q),
        f"| index | factory | build s | size | params | recall@{k} {served} | recall@{k} {same} | QPS single | "
        "QPS batch 64 | × torch single | × torch batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"**{r['name']} (published)**" if r.get("chosen") else r["name"]
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['factory'] or '?'} | {r['status']} after {r['build_s']:.0f} s "
                         "| — | — | — | — | — | — | — | — |")  # fmt: skip
            continue
        same_recall = f"{r['recall_same']:.3f}" if "recall_same" in r else "—"
        lines.append(
            f"| {name} | `{r['factory']}` | {r['build_s']:.0f} | {_mib(r['index_bytes'])} | {r['params'] or '—'} | "
            f"{r['recall']:.3f} | {same_recall} | {r['qps_1']:,.0f} | {r['qps_64']:,.0f} | "
            f"{r['qps_1'] / torch['qps_1']:.1f}x | {r['qps_64'] / torch['qps_64']:.1f}x |"
        )
    speed = chosen["qps_1"] / torch["qps_1"]
    met = chosen["recall"] >= target and speed >= 20
    lines += [
        "",
        f"Published: **{chosen['kind']}**, recall@{k} {chosen['recall']:.3f} on held-out {served} queries at "
        f"**{speed:.1f}x** torch exact single-query QPS ({chosen['qps_64'] / torch['qps_64']:.1f}x at batch 64); "
        f"{same} queries {chosen.get('recall_same', float('nan')):.3f}. Whole ladder "
        f"{res['ladder_s'] / 60:.1f} min, the published rung's own build {own_build / 60:.1f} min."
        + (f" Goal at 1M (recall ≥ {target} at ≥ 20x, built < 15 min): "
           f"{'met' if met and own_build < 900 else '**not met**'}." if res["n"] >= 1_000_000 else ""),
        "",
        f"Recall–QPS curves on {served} queries (value: recall@{k} {served} / {same} @ QPS single / batch 64):",
        "",
    ]  # fmt: skip
    for r in rows:
        if r.get("curve") and "kind" in r:  # the ladder's rungs (autofaiss's sweep has no second query set)
            knob = r["params"].split("=")[0]
            pts = "; ".join(f"{p['value']}: {p['recall']:.3f} / {p['recall_same']:.3f} @ {p['qps_1']:,.0f} / "
                            f"{p['qps_64']:,.0f}" for p in r["curve"])  # fmt: skip
            lines.append(f"- {r['kind']} (`{knob}`): {pts}")
    auto = next((r for r in rows if r["name"] == "autofaiss"), None)
    if auto is not None:
        lines.append("")
        if auto["status"] == "ok":
            from benchmarks._index_measure import at_recall

            line = (f"autofaiss chose `{auto['factory']}` ({auto['params']}): recall@{k} {auto['recall']:.3f} "
                    f"{served}, {auto['qps_1']:,.0f} QPS single.")  # fmt: skip
            best = at_recall(auto.get("curve", []), target)
            if best is not None:
                line += (f" Swept, it reaches {best['recall']:.3f} at {best['value']} with {best['qps_64']:,.0f} "
                         "QPS batch 64.")  # fmt: skip
            elif auto.get("curve"):
                line += f" Swept, it never reaches {target} (best {max(p['recall'] for p in auto['curve']):.3f})."
            lines.append(line)
        else:
            lines.append(f"autofaiss: {auto['status']} after {auto['build_s']:.0f} s (limit "
                         f"{args.autofaiss_limit_s:.0f} s); no index to measure.")  # fmt: skip
    lines += ["", f"Total wall time {res['wall_s'] / 60:.0f} min. Reproduce: `.venv/bin/python "
              f"benchmarks/bench_index.py --dataset {res['dataset']}"
              + (f" --n {args.n}" if args.n else "") + "`"]  # fmt: skip
    return "\n".join(lines)
