"""Search at concurrency 16 for the whole of a promotion and a rollback, over 10,000 items.

Model A is active with its indexes (random unit vectors: search latency does not depend on their
content); model B is a candidate (A's weights with perturbed heads). A `crossmodal serve
--no-worker` process answers searches while a `crossmodal worker` process runs the promotion job,
which embeds every item with B (the real work, on the same cores), builds B's indexes beside A's,
and flips the active pair; then the admin API rolls back. Clients search without pause throughout.

Recorded: errors (goal 0), p50/p99 before, during the promotion, after it and after the rollback
(each against *before*, measured in the same run), and the time from the promote request to the
first response served by the new pair (and from the rollback request to the first by the old one).

    .venv/bin/python benchmarks/bench_swap.py [--items 10000] [--concurrency 16] [--model builtin:lit-mini]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

from app.api.auth import create_key  # noqa: E402
from app.config import Settings, settings_env  # noqa: E402
from app.db import crud  # noqa: E402
from app.db.session import make_engine, make_session_factory  # noqa: E402
from benchmarks._report import record  # noqa: E402
from benchmarks.bench_search import _free_port, _queries, percentiles, populate  # noqa: E402
from crossmodal_kernel.checkpoints import save_checkpoint  # noqa: E402
from crossmodal_kernel.encoder import Encoder  # noqa: E402
from crossmodal_kernel.loading import load_model  # noqa: E402


def candidate(settings: Settings, sf, spec: str) -> int:
    """Model B: A's weights with the projection heads nudged (a different model, the same cost)."""
    import torch

    loaded = load_model(spec, "cpu")
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "proj" in name or "head" in name:
                p.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(loaded, settings.data_dir / "models" / "candidate" / "checkpoint.pt")
    with sf() as session:
        row = crud.create_model(session, f"{spec.split('@')[0]}@{path}", name="candidate B")
        session.commit()
        return row.id


class Load:
    """``concurrency`` threads searching back to back; every response as (start, ms, status, model id)."""

    def __init__(self, base: str, concurrency: int, queries: list[str]):
        self.base, self.queries = base, queries
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, int, int | None]] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(concurrency)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            n = i
            while not self.stop.is_set():
                query = self.queries[n % len(self.queries)]
                n += len(self.threads)
                t0 = time.monotonic()
                try:
                    resp = client.post("/v1/search/text", json={"query": query, "k": 10})
                    model = resp.json()["model"]["id"] if resp.status_code == 200 else None
                    status = resp.status_code
                except (httpx.HTTPError, ValueError):
                    model, status = None, 0
                self.samples.append((t0, (time.monotonic() - t0) * 1000, status, model))

    def first_served_by(self, model_id: int, after: float) -> float | None:
        times = [t + ms / 1000 for t, ms, status, m in self.samples if m == model_id and t >= after]
        return min(times) if times else None


def phase(samples, start: float, end: float) -> dict:
    rows = [s for s in samples if start <= s[0] < end]
    ok = [ms for _, ms, status, _ in rows if status == 200]
    out = {"requests": len(rows), "errors": len(rows) - len(ok)}
    return {**out, **(percentiles(ok) if ok else {})}


def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    settings = Settings(
        data_dir=tmp, model_spec=args.model, port=_free_port(), index_refresh_seconds=1.0, job_poll_seconds=0.5
    )
    env = {**os.environ, **settings_env(settings)}
    encoder = Encoder.from_spec(args.model, device="cpu")
    populate(settings, args.items, encoder)
    sf = make_session_factory(make_engine(settings.resolved_database_url))
    with sf() as session:
        active = crud.get_active_model(session)
        if active is None:
            raise RuntimeError("populate() left no active model")
        model_a = active.id
        key = create_key(session, "bench", "admin")[1]
        session.commit()
    model_b = candidate(settings, sf, args.model)
    cli = [sys.executable, "-m", "app.cli"]
    quiet = subprocess.DEVNULL
    server = subprocess.Popen([*cli, "serve", "--no-worker"], env=env, stdout=quiet, stderr=quiet)
    worker = subprocess.Popen([*cli, "worker"], env=env, stdout=quiet, stderr=quiet)
    base = f"http://127.0.0.1:{settings.port}"
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    try:
        _wait(lambda: _ready(base), 300)
        load = Load(base, args.concurrency, _queries(500, seed=1))
        for t in load.threads:
            t.start()
        time.sleep(args.warmup)
        t_before = time.monotonic()
        time.sleep(args.phase_seconds)
        t_promote = time.monotonic()
        job = admin.post(f"/v1/admin/models/{model_b}/promote", json={"force": True}).json()
        _wait(lambda: admin.get(f"/v1/admin/jobs/{job['id']}").json()["status"] in ("succeeded", "failed"), 3600)
        t_job_done = time.monotonic()
        final = admin.get(f"/v1/admin/jobs/{job['id']}").json()
        t_new = _first_served(load, model_b, t_promote, 120)
        time.sleep(args.phase_seconds)
        t_rollback = time.monotonic()
        assert admin.post("/v1/admin/rollback", json={}).status_code == 200
        t_old = _first_served(load, model_a, t_rollback, 120)
        time.sleep(args.phase_seconds)
        t_end = time.monotonic()
        load.stop.set()
        for t in load.threads:
            t.join()
    finally:
        for p in (server, worker):
            p.terminate()
            p.wait(timeout=60)
    samples = load.samples
    phases = {
        "before": phase(samples, t_before, t_promote),
        "during promotion": phase(samples, t_promote, max(t_job_done, t_new)),
        "after promotion": phase(samples, max(t_job_done, t_new), t_rollback),
        "after rollback": phase(samples, t_old, t_end),
    }
    mixed = [s for s in samples if s[2] == 200 and s[3] not in (model_a, model_b)]
    return {
        "items": args.items,
        "model": args.model,
        "concurrency": args.concurrency,
        "job_status": final["status"],
        "job_seconds": t_job_done - t_promote,
        "promote_to_first_new_s": t_new - t_promote,
        "job_done_to_first_new_s": t_new - t_job_done,
        "rollback_to_first_old_s": t_old - t_rollback,
        "errors": sum(1 for s in samples if s[2] != 200),
        "requests": len(samples),
        "unknown_model_responses": len(mixed),
        "phases": phases,
    }


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _first_served(load: Load, model_id: int, after: float, timeout: float) -> float:
    """When ``model_id`` first answered a search sent at or after ``after``, waiting up to ``timeout`` s."""
    _wait(lambda: load.first_served_by(model_id, after) is not None, timeout)
    served = load.first_served_by(model_id, after)
    assert served is not None  # _wait returned, and samples are only ever added
    return served


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s")
        time.sleep(0.2)


def markdown(r: dict, args) -> str:
    before = r["phases"]["before"]
    lines = [
        "## Model swap under search load (`benchmarks/bench_swap.py`)",
        "",
        f"Text→image search at concurrency {r['concurrency']} over {r['items']:,} items (`{r['model']}`, SQLite) "
        "for the whole of a promotion (a `crossmodal worker` process embeds every item with the candidate and "
        "builds its indexes on the same 2 cores, then flips the pair) and a rollback. Baseline: the phase before, "
        "same run.",
        "",
        "| phase | requests | errors | p50 ms | p99 ms | p50 / before | p99 / before |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in r["phases"].items():
        if "p50_ms" not in p:
            lines.append(f"| {name} | {p['requests']} | {p['errors']} | – | – | – | – |")
            continue
        lines.append(
            f"| {name} | {p['requests']} | {p['errors']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
            f"{p['p50_ms'] / before['p50_ms']:.2f}x | {p['p99_ms'] / before['p99_ms']:.2f}x |"
        )
    verdict = "met" if r["errors"] == 0 and r["job_status"] == "succeeded" else "NOT met"
    lines += [
        "",
        f"Errors: **{r['errors']}** of {r['requests']} requests (goal 0: {verdict}); responses naming neither "
        f"model: {r['unknown_model_responses']}. The promotion job took {r['job_seconds']:.1f} s ({r['job_status']}); "
        f"promote request → first response from the new pair: **{r['promote_to_first_new_s']:.1f} s** (the job "
        f"embeds every item first, then flips; from the job's success, as polled, to the first new response: "
        f"{r['job_done_to_first_new_s']:.2f} s); rollback "
        f"request → first response from the old pair: **{r['rollback_to_first_old_s']:.2f} s** "
        "(the refresher's interval is 1 s).",
        "",
        f"Reproduce: `.venv/bin/python benchmarks/bench_swap.py --items {args.items} --concurrency {args.concurrency} "
        f"--model {args.model}`",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--model", default="builtin:lit-mini")
    ap.add_argument("--phase-seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    result = run(args)
    text = markdown(result, args)
    print(text)
    if not args.no_record:
        record("swap", result, text)


if __name__ == "__main__":
    main()
