"""The synthetic world's default recipe before and after issue 23's default changes, in one run.

bench_quality.py's default (shapes world, 2000 pairs, `builtin:lit-mini`): the LiT bootstrap (a), then
plain CLIP fine-tuning (b) for 30 steps at batch 48 with the last image group and text layer
unlocked. "before" runs both as they were before issue 23 (same-caption rows as negatives, no
feature dropout, no caption loss weight); "after" with the defaults as they are now. The synthetic
world repeats captions ("a small red circle in the top left" names several images), so masking
identical captions changes its training too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks import bench_quality as bq
from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.loading import load_model
from training.bootstrap import BootstrapConfig, bootstrap_heads
from training.sources import parse_captions

METRICS = ("t2i_R@1", "i2t_R@1", "binding_acc")


def _bootstrap(ds, model: str, seed: int, path: Path, overrides: dict) -> str:
    loaded = load_model(model, "cpu")
    rows = ds.rows("train")
    captions = [parse_captions(r.get("captions")) for r in rows]
    cfg = BootstrapConfig(seed=seed, **overrides)
    bootstrap_heads(loaded, [(str(ds.root / r["image"]), r["text"]) for r in rows], cfg,
                    captions=captions if any(captions) else None)  # fmt: skip
    return f"{model}@{save_checkpoint(loaded, path)}"


OLD_BOOTSTRAP = {"siblings": "negative", "caption_weight": 0.0, "feature_dropout": 0.0}


def synthetic_check(seeds: list[int], n: int = 2000, steps: int = bq.DEFAULT_STEPS, after: dict | None = None) -> dict:
    """``{"before"|"after": [{"seed", "(a)": scores, "(b)": scores, "seconds"}]}``; ``after`` overrides today's
    bootstrap defaults (to try a candidate before it becomes one)."""
    args = argparse.Namespace(image_groups=1, text_layers=1, steps=steps, batch_size=48, lr=bq.DEFAULT_LR,
                              model="builtin:lit-mini")  # fmt: skip
    settings = {"before": (OLD_BOOTSTRAP, {"loss": {"siblings": "negative"}}), "after": (after or {}, {})}
    out: dict[str, list] = {k: [] for k in settings}
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="real-synthetic-") as tmp_name:
            tmp = Path(tmp_name)
            ds, attributes = bq.make_world("shapes", n, seed, tmp / "ds")
            for label, (boot, over) in settings.items():
                t0 = time.perf_counter()
                spec = _bootstrap(ds, args.model, seed, tmp / f"{label}.pt", boot)
                a = bq.score(spec, ds, attributes)
                ckpt = bq.finetune_from(args, ds, spec, tmp / f"ft-{label}", seed, over)
                b = bq.score(f"{args.model}@{ckpt}", ds, attributes)
                out[label].append({"seed": seed, "(a)": {m: a[m] for m in METRICS}, "(b)": {m: b[m] for m in METRICS},
                                   "seconds": time.perf_counter() - t0})  # fmt: skip
                print(f"[synthetic] {label} seed {seed}: (a) {a['t2i_R@1']:.3f} (b) {b['t2i_R@1']:.3f} "
                      f"binding {b['binding_acc']:.3f}", flush=True)  # fmt: skip
    return out


def table(result: dict) -> list[str]:
    import numpy as np

    lines = ["| defaults | (a) bootstrap t2i R@1 | i2t R@1 | (b) fine-tune t2i R@1 | i2t R@1 | binding | s / seed |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, runs in result.items():

        def m(stage: str, metric: str, runs: list = runs) -> str:
            return f"{np.mean([r[stage][metric] for r in runs]):.3f}"

        secs = np.mean([r["seconds"] for r in runs])
        lines.append(f"| {label} | {m('(a)', 't2i_R@1')} | {m('(a)', 'i2t_R@1')} | {m('(b)', 't2i_R@1')} | "
                     f"{m('(b)', 'i2t_R@1')} | {m('(b)', 'binding_acc')} | {secs:.0f} |")  # fmt: skip
    return lines
