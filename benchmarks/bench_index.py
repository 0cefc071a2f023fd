"""Index benchmark: exact Flat vs our automatic choice vs autofaiss's choice, on hard synthetic and real data.

Two datasets (``--dataset``):

* ``mixture``: 1M x 512 unit vectors from a mixture of 50,000 Gaussian
  components whose centres have a decaying spectrum (like real embeddings),
  with enough noise that IVF at nprobe=1 recalls less than half. Easy data
  flatters every index; the script measures and reports that nprobe=1 recall.
* ``real``: 100k image embeddings of the synthetic world by ``builtin:lit-mini``
  (the index a user of the demo model gets), queried with held-out image
  embeddings and, as a second query set, caption embeddings (text->image, the
  product's main query, whose distribution differs from the corpus). Made once
  with the project's own resumable pipeline (``index.embed.embed_sharded``) and
  cached under ``data/bench-cache``; an interrupted run resumes.

For each dataset and for each contender (exact ``Flat``; ``choose_index`` under
the memory budget, built by ``index.builder`` and tuned by ``index.tune`` on
one query set; autofaiss in its own venv under the same budget and a time
limit) the script reports build time, index memory, recall@10 on a *second*
held-out query set, and QPS for single queries and batches of 64, plus the
recall–QPS curve of our choice.

    .venv/bin/python benchmarks/bench_index.py --dataset mixture
    .venv/bin/python benchmarks/bench_index.py --dataset real
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

from benchmarks._index_measure import (  # noqa: E402
    ServiceExact,
    TorchExact,
    evaluate,
    index_bytes,
    search_param_of,
    sweep,
)

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "data" / "bench-cache"
TEXT_TRAIN = 5000  # corpus images whose captions are the real data's training queries
log = logging.getLogger("bench_index")


# ---------------------------------------------------------------- real data


def real_dataset(n_base: int, n_query: int, model: str = "builtin:lit-mini", cache: Path = CACHE) -> dict:
    """Image embeddings of ``n_base + 2 * n_query`` synthetic-world images, plus their captions' embeddings.

    Rows ``[0, n_base)`` are the corpus, the next ``n_query`` the tuning
    queries, the last ``n_query`` the evaluation queries. Cached: images are
    rendered once, shards are embedded with ``embed_sharded`` (a restart skips
    finished shards), and the assembled arrays are saved as ``.npy``.
    """
    from crossmodal_kernel.encoder import Encoder
    from index.embed import embed_sharded
    from index.shards import load_all
    from training.synthetic.shapes import generate_dataset, load_dataset

    n = n_base + 2 * n_query
    root = cache / f"real-{model.replace(':', '-').replace('/', '-')}-{n}"
    images, texts = root / "arrays.npz", root / "texts.npz"
    if images.exists():
        z = np.load(images)
        arrays = {k: z[k] for k in ("xb", "xq_tune", "xq_eval")}
    else:
        t0 = time.perf_counter()
        ds = generate_dataset(root / "ds", n=n, seed=0, progress=_every(10_000, "rendered"))
        log.info("dataset ready (%d images) in %.0f s", n, time.perf_counter() - t0)
        encoder = Encoder.from_spec(model, device="cpu", batch_size=64)
        items = [(i, str(ds.root / r["image"])) for i, r in enumerate(ds.rows())]
        t0 = time.perf_counter()
        report = embed_sharded(encoder, items, root / "image-shards", "image", shard_size=4096,
                               progress=_every(4096, "embedded"))  # fmt: skip
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} images failed to embed: {list(report.failed.items())[:3]}")
        log.info("embedded %d images (%d shards already done) in %.0f s", report.embedded, report.skipped_shards,
                 time.perf_counter() - t0)  # fmt: skip
        ids, x = load_all(root / "image-shards")
        x = np.ascontiguousarray(x[np.argsort(ids)], dtype=np.float32)
        arrays = {"xb": x[:n_base], "xq_tune": x[n_base : n_base + n_query], "xq_eval": x[n - n_query :]}
        _save(images, arrays)
    have = set(np.load(texts).files) if texts.exists() else set()
    if not {"xq_text_tune", "xq_text", "xq_text_train"} <= have:
        # the captions of the two query sets' images (the product's text->image queries), and of the first
        # TEXT_TRAIN corpus images (the query-aware rung's training queries: a service has its items' texts)
        rows = load_dataset(root / "ds").rows()
        encoder = Encoder.from_spec(model, device="cpu", batch_size=64)
        parts = {"xq_text_tune": rows[n_base : n_base + n_query], "xq_text": rows[n - n_query :],
                 "xq_text_train": rows[: min(TEXT_TRAIN, n_base)]}  # fmt: skip
        captions = sorted({r["text"] for part in parts.values() for r in part})
        cap_x = encoder.encode_texts(captions)
        cap_of = {c: i for i, c in enumerate(captions)}
        _save(texts, {name: np.ascontiguousarray(cap_x[[cap_of[r["text"]] for r in part]], dtype=np.float32)
                      for name, part in parts.items()})  # fmt: skip
    z = np.load(texts)
    arrays.update({k: z[k] for k in z.files})
    return arrays


def _save(path: Path, arrays: dict) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _every(step: int, what: str):
    last = [0]

    def progress(done: int, total: int) -> None:
        if done - last[0] >= step or done == total:
            last[0] = done
            log.info("%s %d / %d", what, done, total)

    return progress


# ---------------------------------------------------------------- hard synthetic data


def mixture_dataset(n: int, d: int, components: int, noise: float, n_query: int, seed: int = 0) -> dict:
    """``n`` corpus and ``2 * n_query`` query vectors drawn from one Gaussian mixture, L2-normalised.

    Centres and noise share a decaying spectrum (dimension j has scale
    ``(j + 1) ** -0.5``), as real embeddings concentrate their variance in few
    directions; ``noise`` is the noise's scale relative to a centre's. Queries
    are fresh draws from the same mixture, never corpus rows.
    """
    rng = np.random.default_rng(seed)
    spec = (np.arange(d) + 1.0) ** -0.5
    spec = (spec / np.sqrt((spec**2).sum())).astype(np.float32)
    centres = rng.standard_normal((components, d), dtype=np.float32) * spec
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, d), dtype=np.float32)
        for i0 in range(0, m, 65536):
            i1 = min(m, i0 + 65536)
            x = centres[rng.integers(0, components, i1 - i0)]
            x += noise * rng.standard_normal((i1 - i0, d), dtype=np.float32) * spec
            out[i0:i1] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return {"xb": draw(n), "xq_tune": draw(n_query), "xq_eval": draw(n_query)}


def run_exact(data: dict, gt_eval, k: int) -> list[dict]:
    """The exact baselines: FAISS ``IndexFlat``, torch matmul + ``topk``, and the service's ``index.flat.search``
    over the same ``IndexFlat`` (built once)."""
    from index.flat import build_exact

    t0 = time.perf_counter()
    flat_index = build_exact(data["xb"], np.arange(len(data["xb"]), dtype=np.int64))
    build_s = time.perf_counter() - t0
    flat_bytes = index_bytes(flat_index)
    rows = []
    for name, factory, index, built_s, size in (
        ("exact Flat", "IDMap2,Flat", flat_index, build_s, flat_bytes),
        ("exact, torch matmul + topk", "(no index)", TorchExact(data["xb"]), 0.0, int(data["xb"].nbytes)),
        ("exact, ours (index.flat.search)", "IDMap2,Flat", ServiceExact(flat_index), build_s, flat_bytes),
    ):
        row = {"name": name, "factory": factory, "status": "ok", "build_s": built_s, "index_bytes": size,
               "params": ""}  # fmt: skip
        row.update(evaluate(index, data["xq_eval"], gt_eval, k))
        _extra_queries(row, index, data, k)
        rows.append(row)
    return rows


def run_autofaiss(data: dict, gt_eval, k: int, budget: int, time_limit_s: float, target: float) -> dict:
    """autofaiss in its own venv (numpy<2, faiss-cpu<1.10), its index measured here like ours."""
    import faiss

    from benchmarks import _autofaiss

    row = {"name": "autofaiss", "factory": "", "status": "", "build_s": float("nan"), "index_bytes": 0, "params": ""}
    python = _autofaiss.ensure_venv(CACHE / "autofaiss-venv")
    import hashlib

    xb = data["xb"]
    digest = hashlib.sha1(np.ascontiguousarray(xb[:: max(1, len(xb) // 1000)]).tobytes()).hexdigest()[:12]
    emb = CACHE / f"autofaiss-input-{len(xb)}x{xb.shape[1]}-{digest}"
    if not (emb / "done").exists():
        _autofaiss.write_numpy_embeddings(data["xb"], emb)
        (emb / "done").touch()
    out = CACHE / "autofaiss-out"
    log.info("autofaiss: building under %.2f GiB, time limit %.0f s", budget / 2**30, time_limit_s)
    res = _autofaiss.build(python, emb, out, budget, time_limit_s, nb_cores=_cores())
    row.update(status=res["status"], build_s=res["wall_s"], factory=res.get("index_key") or "",
               peak_rss_bytes=res.get("peak_rss_bytes"), autofaiss_infos=res.get("autofaiss_infos"))  # fmt: skip
    if res["status"] != "ok":
        row["note"] = res.get("stderr_tail", "")[-400:]
        log.warning("autofaiss did not finish: %s", res["status"])
        return row
    index = faiss.read_index(str(res["index_path"]))
    _autofaiss.apply_params(index, res.get("index_param") or "")
    row.update(params=res.get("index_param") or "", index_bytes=index_bytes(index))
    row.update(evaluate(index, data["xq_eval"], gt_eval, k))
    _extra_queries(row, index, data, k)
    param, values = search_param_of(index)
    if param:
        log.info("autofaiss: sweeping %s on the evaluation queries", param)
        row["curve"] = sweep(index, param, values, data["xq_eval"], gt_eval, k)
    return row


def _extra_queries(row: dict, index, data: dict, k: int) -> None:
    """Recall on the second query set (image-like queries), at the settings already chosen."""
    from index.tune import measure_recall

    if "gt_same" in data:
        row["recall_same"] = measure_recall(index, data["xq_same"], data["gt_same"][1], k, data["gt_same"][0])


def _stage_logger():
    last: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in last or done - last[stage] >= 200_000 or (total and done == total):
            last[stage] = done
            log.info("  %s %d%s", stage, done, f" / {total}" if total else "")

    return progress


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("mixture", "real"), required=True)
    ap.add_argument("--n", type=int, help="corpus size (default 1,000,000 mixture / 100,000 real)")
    ap.add_argument("--d", type=int, default=512, help="mixture dimension")
    ap.add_argument("--components", type=int, default=50_000, help="mixture components")
    ap.add_argument("--noise", type=float, default=0.75, help="mixture noise scale relative to a centre")
    ap.add_argument("--queries", type=int, default=1000, help="tuning queries, and as many evaluation queries")
    ap.add_argument("--train-queries", type=int, default=5000, help="text-like training queries (query-aware rung)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--budget-gib", type=float, help="memory budget (default: the service's setting)")
    ap.add_argument("--target-recall", type=float, help="default: the service's setting")
    ap.add_argument("--ladder", default=None, help="comma-separated rungs to measure (default: the service's ladder)")
    ap.add_argument("--alternatives", default="hnsw_split",
                    help="comma-separated kinds outside the service's ladder to measure beside it")  # fmt: skip
    ap.add_argument("--autofaiss-limit-s", type=float, default=900.0, help="autofaiss's wall-clock limit")
    ap.add_argument("--no-autofaiss", action="store_true")
    ap.add_argument("--exact-only", action="store_true", help="measure only the exact baselines")
    ap.add_argument("--prepare-only", action="store_true", help="make and cache the dataset, then stop")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from app.config import Settings
    from benchmarks._ladder_bench import run_ladder
    from index.builder import array_shards
    from index.tune import exact_ground_truth

    settings = Settings()
    budget = int(args.budget_gib * 2**30) if args.budget_gib else settings.index_memory_budget_bytes
    target = args.target_recall or settings.index_target_recall
    k = args.k
    t_start = time.perf_counter()
    data, queries = (mixture_queries if args.dataset == "mixture" else real_queries)(args)
    if args.prepare_only:
        print({key: v.shape for key, v in data.items() if hasattr(v, "shape")})
        return
    xb = data["xb"]
    n, d = xb.shape
    log.info("dataset %s: %d x %d; queries %s", args.dataset, n, d,
             {key: len(v) for key, v in data.items() if key.startswith("xq")})  # fmt: skip
    shards = array_shards(np.arange(n, dtype=np.int64), xb)
    t0 = time.perf_counter()
    data["gt_eval"] = exact_ground_truth(shards, data["xq_eval"], k)
    data["gt_same"] = exact_ground_truth(shards, data["xq_same"], k)
    log.info("ground truth in %.0f s", time.perf_counter() - t0)

    rows = run_exact(data, data["gt_eval"], k)
    for r in rows:
        log.info("%s: %.1f QPS single, %.1f QPS batch 64", r["name"], r["qps_1"], r["qps_64"])
    if args.exact_only:
        md = exact_report(rows, args, n, d)
        print(md)
        if not args.no_record:
            from benchmarks._report import record

            record(f"index-{args.dataset}-exact", json.loads(json.dumps({"rows": rows}, default=_jsonable)), md)
        return
    kinds = tuple(x for x in args.ladder.split(",") if x) if args.ladder else None
    alternatives = tuple(x for x in args.alternatives.split(",") if x)
    ladder_rows, totals = run_ladder(data, k, budget, target, kinds, _stage_logger(), alternatives)
    rows += ladder_rows
    if not args.no_autofaiss:
        rows.append(run_autofaiss(data, data["gt_eval"], k, budget, args.autofaiss_limit_s, target))
    result = {"dataset": args.dataset, "n": n, "d": d, "k": k, "budget_bytes": budget, "target_recall": target,
              "queries": queries, "wall_s": time.perf_counter() - t_start, "rows": rows, **totals,
              "args": {key: v for key, v in vars(args).items()}}  # fmt: skip
    md = report(result, args)
    print(md)
    if not args.no_record:
        from benchmarks._report import record

        name = f"index-{args.dataset}" + (f"-{args.budget_gib:g}gib" if args.budget_gib else "")
        record(name, json.loads(json.dumps(result, default=_jsonable)), md)


def mixture_queries(args) -> tuple[dict, dict]:
    """The mixture corpus, text-like (calibrated, ``benchmarks._ood``) served queries and image-like ones."""
    from benchmarks import _ood

    n = args.n or 1_000_000
    base = mixture_dataset(n + args.train_queries, args.d, args.components, args.noise, args.queries)
    xb, x_train = base["xb"][:n], base["xb"][n:]
    targets, source = _ood.real_ratios(CACHE)
    cal = _ood.calibrate(xb, base["xq_tune"][:300], base["xq_eval"][:300], targets)
    log.info("calibrated text-like queries: noise %.2f, gap %.2f (ratios %s, targets %s)", cal["noise"], cal["gap"],
             cal["ratios"], targets)  # fmt: skip
    text = lambda x, seed: _ood.text_like(x, cal["noise"], cal["gap"], seed)  # noqa: E731
    data = {"xb": xb, "xq_tune": text(base["xq_tune"], 1), "xq_eval": text(base["xq_eval"], 2),
            "xq_train": text(x_train, 3), "xq_same_tune": base["xq_tune"], "xq_same": base["xq_eval"]}  # fmt: skip
    full_text, full_image = _ood.neighbour_stats(xb, data["xq_eval"]), _ood.neighbour_stats(xb, data["xq_same"])
    matched = {key: full_text[key] / full_image[key] for key in ("spread", "overlap")}
    info = {"served": "text-like (calibrated)", "same": "image-like", "targets": targets, "target_source": source,
            "noise": cal["noise"], "gap": cal["gap"], "calibration_ratios": cal["ratios"], "ratios_full": matched,
            "text_stats": full_text, "image_stats": full_image, "grid": cal["grid"]}  # fmt: skip
    return data, info


def real_queries(args) -> tuple[dict, dict]:
    """Real image embeddings; caption queries served (tuned on, trained on), image queries beside them."""
    data = real_dataset(args.n or 100_000, args.queries)
    out = {"xb": data["xb"], "xq_tune": data["xq_text_tune"], "xq_eval": data["xq_text"],
           "xq_train": data["xq_text_train"][: args.train_queries], "xq_same_tune": data["xq_tune"],
           "xq_same": data["xq_eval"]}  # fmt: skip
    return out, {"served": "caption", "same": "image"}


def exact_report(rows: list[dict], args, n: int, d: int) -> str:
    lines = [f"## Exact baselines, {args.dataset} data (`benchmarks/bench_index.py --dataset {args.dataset} "
             "--exact-only`)", "", f"{n:,} x {d}; 2 threads; recall@{args.k} on {args.queries} queries.", "",
             "| exact search | recall | QPS single | QPS batch 64 |", "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['name']} | {r['recall']:.3f} | {r['qps_1']:,.1f} | {r['qps_64']:,.1f} |")
    a = rows[0]
    lines.append("")
    for b in rows[1:]:
        lines.append(f"{b['name']} / {a['name']}: {b['qps_1'] / a['qps_1']:.2f}x single, "
                     f"{b['qps_64'] / a['qps_64']:.2f}x batch 64.")  # fmt: skip
    return "\n".join(lines)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _fmt_bytes(b) -> str:
    return f"{b / 2**20:,.0f} MiB" if b else "—"


def report(res: dict, args) -> str:
    from benchmarks._ladder_report import ladder_report

    return ladder_report(res, args)


if __name__ == "__main__":
    main()
