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

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "data" / "bench-cache"
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
    from training.synthetic import generate_dataset, load_dataset

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
    if not texts.exists():  # the captions of the two query sets' images: the product's text->image queries
        rows = load_dataset(root / "ds").rows()
        encoder = Encoder.from_spec(model, device="cpu", batch_size=64)
        captions = sorted({r["text"] for r in rows[n_base:]})
        cap_x = encoder.encode_texts(captions)
        cap_of = {c: i for i, c in enumerate(captions)}

        def caption_queries(part: list[dict]) -> np.ndarray:
            return np.ascontiguousarray(cap_x[[cap_of[r["text"]] for r in part]], dtype=np.float32)

        both = {"xq_text_tune": caption_queries(rows[n_base : n_base + n_query]),
                "xq_text": caption_queries(rows[n - n_query :])}  # fmt: skip
        _save(texts, both)
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


# ---------------------------------------------------------------- measurements


def qps(index, xq: np.ndarray, k: int, batch: int, budget_s: float = 10.0) -> float:
    """Queries a second searching ``xq`` in batches of ``batch``, one batch after another, for up to ``budget_s``."""
    index.search(xq[:batch], k)  # warm-up
    done, t0 = 0, time.perf_counter()
    while done < len(xq):
        index.search(xq[done : done + batch], k)
        done += len(xq[done : done + batch])
        if time.perf_counter() - t0 > budget_s:
            break
    return done / (time.perf_counter() - t0)


def evaluate(index, xq: np.ndarray, gt: tuple[np.ndarray, np.ndarray], k: int) -> dict:
    from index.tune import measure_recall

    gt_D, gt_I = gt
    return {
        "recall": measure_recall(index, xq, gt_I, k, gt_D),
        "qps_1": qps(index, xq, k, 1),
        "qps_64": qps(index, xq, k, 64),
    }


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def search_param_of(index) -> tuple[str | None, list[int]]:
    """The knob of an index we did not plan (autofaiss's) and values to sweep."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        top = int(np.log2(min(ivf.nlist, 4096)))
        return "nprobe", [1 << i for i in range(top + 1)]
    if _hnsw_inside(index):
        from index.factory import EF_SEARCH

        return "efSearch", list(EF_SEARCH)
    return None, []


def _hnsw_inside(index) -> bool:
    import faiss

    inner = faiss.downcast_index(index)
    while hasattr(inner, "index") and not hasattr(inner, "hnsw"):
        inner = faiss.downcast_index(inner.index)
    return hasattr(inner, "hnsw")


def sweep(index, param: str | None, values: list[int], xq, gt, k: int) -> list[dict]:
    """Recall@k and batch-64 QPS at each value of ``param`` (the recall–QPS curve); stops once recall ~ 1."""
    from index.tune import measure_recall, set_search_param

    curve = []
    for v in values if param else [None]:
        if param:
            set_search_param(index, param, v)
        point = {"value": v, "recall": measure_recall(index, xq, gt[1], k, gt[0]), "qps_64": qps(index, xq, k, 64, 5)}
        curve.append(point)
        log.info("  %s=%s recall@%d %.3f  %.0f QPS (batch 64)", param, v, k, point["recall"], point["qps_64"])
        if point["recall"] >= 0.999:
            break
    return curve


def at_recall(curve: list[dict], target: float) -> dict | None:
    """The fastest point of ``curve`` whose recall reaches ``target``."""
    ok = [p for p in curve if p["recall"] >= target]
    return max(ok, key=lambda p: p["qps_64"]) if ok else None


# ---------------------------------------------------------------- contenders


class TorchExact:
    """Exact inner-product top-k as one torch matmul + ``topk`` over all threads: a second exact baseline.

    FAISS's ``IndexFlat`` searches one query on one thread and a batch of 64 in
    small BLAS blocks; a plain matrix product is faster for both here, and a
    speed-up is only as honest as the baseline it is measured against.
    """

    def __init__(self, xb: np.ndarray):
        import torch

        self.xb = torch.from_numpy(xb)
        self.ntotal = len(xb)

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        D, I = (torch.from_numpy(np.ascontiguousarray(xq, dtype=np.float32)) @ self.xb.T).topk(k, dim=1)
        return D.numpy(), I.numpy()


class ServiceExact:
    """The service's exact search, ``index.flat.search``, over the same ``IDMap2,Flat`` index."""

    def __init__(self, index):
        self.index, self.ntotal = index, index.ntotal

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from index import flat

        return flat.search(self.index, xq, k)


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


def run_planned(name: str, plan, data: dict, gt_tune, gt_eval, k: int, target: float, curve: bool) -> dict:
    """Build ``plan`` with the project's builder, tune it on the tuning queries, measure on the evaluation ones."""
    from index.builder import array_shards, build_index
    from index.tune import set_search_param, tune

    xb = data["xb"]
    log.info("%s: %s (%s)", name, plan.factory, plan.reason or plan.kind)
    t0 = time.perf_counter()
    index = build_index(array_shards(np.arange(len(xb), dtype=np.int64), xb), xb.shape[1], plan,
                        progress=_stage_logger())  # fmt: skip
    built_s = time.perf_counter() - t0
    tuned = tune(index, plan, data["xq_tune"], gt_tune[1], k, target, gt_D=gt_tune[0])
    build_s = time.perf_counter() - t0
    log.info("%s built in %.0f s (+ %.0f s tuning): %s", name, built_s, build_s - built_s, tuned.note)
    row = {"name": name, "factory": plan.factory, "status": "ok", "build_s": build_s, "train_add_s": built_s,
           "index_bytes": index_bytes(index), "estimated_bytes": plan.memory_bytes,
           "params": f"{tuned.param}={tuned.value}" if tuned.param else "", "tuned_recall": tuned.recall,
           "reached": tuned.reached}  # fmt: skip
    served = ServiceExact(index) if plan.kind == "flat" else index  # what the service runs for exact indexes
    row.update(evaluate(served, data["xq_eval"], gt_eval, k))
    _extra_queries(row, served, data, k)
    if curve and plan.search_param:
        row["curve"] = sweep(index, plan.search_param, list(plan.candidates), data["xq_eval"], gt_eval, k)
        set_search_param(index, plan.search_param, tuned.value)
    row["index"] = index
    return row


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
    """Recall on the second query set (the real data's caption embeddings), at the settings already chosen."""
    from index.tune import measure_recall

    if "gt_text" in data:
        row["recall_text"] = measure_recall(index, data["xq_text"], data["gt_text"][1], k, data["gt_text"][0])


def _stage_logger():
    last = {}

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
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--budget-gib", type=float, help="memory budget (default: the service's setting)")
    ap.add_argument("--target-recall", type=float, help="default: the service's setting")
    ap.add_argument("--extra", default=None,
                    help="comma-separated index kinds to build beside our choice (default: ivf_flat for mixture, "
                         "hnsw,ivf_flat,ivf_pq for real; '' for none)")  # fmt: skip
    ap.add_argument("--autofaiss-limit-s", type=float, default=900.0, help="autofaiss's wall-clock limit")
    ap.add_argument("--no-autofaiss", action="store_true")
    ap.add_argument("--tune-on", choices=("image", "text"), default=None,
                    help="tuning queries: held-out image embeddings, or (real data only) captions of held-out images, "
                    "as the service tunes an image index (default: text for real, image for mixture)")  # fmt: skip
    ap.add_argument("--exact-only", action="store_true", help="measure only the two exact baselines")
    ap.add_argument("--prepare-only", action="store_true", help="make and cache the dataset, then stop")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from app.config import Settings
    from index.factory import choose_index, make_plan
    from index.tune import exact_ground_truth

    settings = Settings()
    budget = int(args.budget_gib * 2**30) if args.budget_gib else settings.index_memory_budget_bytes
    target = args.target_recall or settings.index_target_recall
    k = args.k
    t_start = time.perf_counter()
    if args.dataset == "mixture":
        n = args.n or 1_000_000
        data = mixture_dataset(n, args.d, args.components, args.noise, args.queries)
        extra = "ivf_flat" if args.extra is None else args.extra
    else:
        n = args.n or 100_000
        data = real_dataset(n, args.queries)
        extra = "hnsw,ivf_flat,ivf_pq" if args.extra is None else args.extra
    if args.prepare_only:
        print({key: v.shape for key, v in data.items()})
        return
    tune_on = args.tune_on or ("text" if args.dataset == "real" else "image")
    if tune_on == "text":
        if "xq_text_tune" not in data:
            raise SystemExit("--tune-on text needs caption queries: real data only")
        data["xq_tune"] = data["xq_text_tune"]
    xb = data["xb"]
    d = xb.shape[1]
    log.info("dataset %s: %d x %d, %d + %d queries", args.dataset, n, d, len(data["xq_tune"]), len(data["xq_eval"]))

    from index.builder import array_shards

    shards = array_shards(np.arange(n, dtype=np.int64), xb)
    t0 = time.perf_counter()
    gt_tune = exact_ground_truth(shards, data["xq_tune"], k)
    gt_eval = exact_ground_truth(shards, data["xq_eval"], k)
    if "xq_text" in data:
        data["gt_text"] = exact_ground_truth(shards, data["xq_text"], k)
    log.info("ground truth in %.0f s", time.perf_counter() - t0)

    rows = run_exact(data, gt_eval, k)
    for r in rows:
        log.info("%s: %.1f QPS single, %.1f QPS batch 64", r["name"], r["qps_1"], r["qps_64"])
    if args.exact_only:
        md = exact_report(rows, args, n, d)
        print(md)
        if not args.no_record:
            from benchmarks._report import record

            record(f"index-{args.dataset}-exact", json.loads(json.dumps({"rows": rows}, default=_jsonable)), md)
        return
    plan = choose_index(n, d, budget)
    rows.append(run_planned("ours (auto)", plan, data, gt_tune, gt_eval, k, target, curve=True))
    rows[-1].pop("index")
    nprobe1 = None
    for kind in [x for x in extra.split(",") if x and x != plan.kind]:
        row = run_planned(f"ours, {kind} forced", make_plan(kind, n, d), data, gt_tune, gt_eval, k, target,
                          curve=kind == "ivf_flat")  # fmt: skip
        index = row.pop("index")
        if kind == "ivf_flat":
            from index.tune import measure_recall, set_search_param

            set_search_param(index, "nprobe", 1)
            nprobe1 = measure_recall(index, data["xq_eval"], gt_eval[1], k, gt_eval[0])
            log.info("data check: IVF-Flat at nprobe=1 recalls %.3f", nprobe1)
        del index
        rows.append(row)
    if not args.no_autofaiss:
        rows.append(run_autofaiss(data, gt_eval, k, budget, args.autofaiss_limit_s, target))
    wall = time.perf_counter() - t_start

    result = {"dataset": args.dataset, "tune_on": tune_on, "n": n, "d": d, "k": k, "budget_bytes": budget,
              "target_recall": target,
              "queries": args.queries, "nprobe1_recall": nprobe1, "wall_s": wall, "rows": rows,
              "args": {key: v for key, v in vars(args).items()}}  # fmt: skip
    md = report(result, args)
    print(md)
    if not args.no_record:
        from benchmarks._report import record

        name = f"index-{args.dataset}" + (f"-{args.budget_gib:g}gib" if args.budget_gib else "")
        record(name, json.loads(json.dumps(result, default=_jsonable)), md)


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
    rows, k, target = res["rows"], res["k"], res["target_recall"]
    exact = [r for r in rows if r["name"].startswith("exact")]
    best_1 = max(exact, key=lambda r: r["qps_1"])
    best_64 = max(exact, key=lambda r: r["qps_64"])
    ours = next(r for r in rows if r["name"] == "ours (auto)")
    auto = next((r for r in rows if r["name"] == "autofaiss"), None)
    title = {
        "mixture": f"{res['n']:,} x {res['d']} vectors from a {args.components:,}-component Gaussian mixture "
        f"(noise {args.noise})",
        "real": f"{res['n']:,} `builtin:lit-mini` image embeddings ({res['d']}-d) of the synthetic world",
    }[res["dataset"]]
    text_col = "recall_text" in exact[0]
    lines = [
        f"## Index, {res['dataset']} data, {res['budget_bytes'] / 2**30:g} GiB budget "
        f"(`benchmarks/bench_index.py --dataset {res['dataset']}`)",
        "",
        f"{title}; memory budget {res['budget_bytes'] / 2**30:.2f} GiB; our index tuned to recall@{k} ≥ {target} "
        f"on {res['queries']} held-out {'caption' if res['tune_on'] == 'text' else res['dataset']} queries and "
        f"measured on {res['queries']} other held-out {res['dataset']} vectors"
        + (" and on the captions of their images (text queries)" if text_col else "")
        + ". "
        "Single = one query a call; batch = 64 a call; 2 threads. Index size = serialised bytes.",
        "",
        f"| index | factory | build s | size | params | recall@{k} | QPS single | QPS batch 64 |"
        + (" recall@10 text queries |" if text_col else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if text_col else ""),
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['factory'] or '?'} | {r['status']} after {r['build_s']:.0f} s "
                         "| — | — | — | — | — |" + (" — |" if text_col else ""))  # fmt: skip
            continue
        lines.append(
            f"| {r['name']} | `{r['factory']}` | {r['build_s']:.0f} | {_fmt_bytes(r['index_bytes'])} | "
            f"{r['params'] or '—'} | {r['recall']:.3f} | {r['qps_1']:,.0f} | {r['qps_64']:,.0f} |"
            + (f" {r['recall_text']:.3f} |" if text_col else "")
        )
    lines.append("")
    if res["nprobe1_recall"] is not None:
        lines.append(f"Data check: IVF-Flat at nprobe=1 recalls {res['nprobe1_recall']:.3f} (should be < 0.5 "
                     "for the mixture).")  # fmt: skip
        lines.append("")
    if "curve" in ours:
        points = ", ".join(f"{p['value']}: {p['recall']:.3f} @ {p['qps_64']:,.0f}" for p in ours["curve"])
        knob = ours["params"].split("=")[0]
        lines += [f"Recall–QPS curve of our choice (`{knob}`: recall@{k} @ QPS batch 64): {points}", ""]
    speedup = ours["qps_1"] / best_1["qps_1"]
    lines.append(f"Ours vs the faster exact search: recall@{k} {ours['recall']:.3f} at **{speedup:.1f}x** the "
                 f"single-query QPS of {best_1['name']} ({ours['qps_64'] / best_64['qps_64']:.1f}x the batch-64 QPS "
                 f"of {best_64['name']})."  # fmt: skip
                 + (f" Goal at 1M: ≥ 20x single-query at recall ≥ {target} — "
                    f"{'met' if speedup >= 20 and ours['recall'] >= target else '**not met**'}."
                    if res["n"] >= 1_000_000 else ""))  # fmt: skip
    if auto is not None and auto["status"] == "ok":
        cmp = f"autofaiss at its own setting ({auto['params']}): recall@{k} {auto['recall']:.3f}, " \
              f"{auto['qps_1']:,.0f} QPS single. Ours: {ours['qps_1'] / auto['qps_1']:.2f}x its single-query QPS " \
              f"at {'equal or better' if ours['recall'] >= auto['recall'] else 'LOWER'} recall."  # fmt: skip
        best = at_recall(auto.get("curve", []), target)
        if best is not None:
            cmp += f" Swept to recall ≥ {target}, autofaiss reaches {best['recall']:.3f} at {best['value']} " \
                   f"with {best['qps_64']:,.0f} QPS batch 64 (ours {ours['qps_64']:,.0f})."  # fmt: skip
        elif auto.get("curve"):
            cmp += f" Swept, autofaiss's index never reaches recall {target} (best " \
                   f"{max(p['recall'] for p in auto['curve']):.3f})."  # fmt: skip
        lines.append(cmp)
    elif auto is not None:
        limit = args.autofaiss_limit_s
        status = f"{auto['status']} after {auto['build_s']:.0f} s (limit {limit:.0f} s)"
        lines.append(f"autofaiss: {status}; no index to measure.")
    lines += ["", f"Total wall time {res['wall_s'] / 60:.0f} min. Reproduce: "
              f"`.venv/bin/python benchmarks/bench_index.py --dataset {res['dataset']}"
              + (f" --budget-gib {args.budget_gib:g}" if args.budget_gib else "") + "`"]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
