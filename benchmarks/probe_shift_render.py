"""Which of the shift split's rendering changes costs the bootstrapped model what?

The shift split (training/synthetic/shift.py) changes five things about how a scene is drawn at
once: the background (gradients or stripes instead of tinted blotches), a dark outline, stronger
rotation, blur and smaller objects. This probe bootstraps a model on the shapes world (as
bench_quality.py does), then draws the shift split's scenes again, with canonical captions, in
styles that differ from the full shift style in one factor:

* ``shift``: all five changes (the shift split's *render only* diagnostic, re-drawn);
* ``shift but no <factor>``: that factor back at its training value, the other four shifted;
* ``background only``: the training style with the shift's backgrounds, nothing else changed;

and, as the in-distribution baseline of the same run, the same scenes drawn by the training
renderer (``training.synthetic.shapes.render``). Scores are t2i R@1 (duplicate-aware) over the scenes.

    .venv/bin/python benchmarks/probe_shift_render.py [--model builtin:lit-mini-spp] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_quality  # noqa: E402  (applies the runtime defaults)
from benchmarks._report import record  # noqa: E402
from crossmodal_kernel.encoder import Encoder  # noqa: E402
from training.evaluate import retrieval_metrics  # noqa: E402
from training.synthetic.captions import scene_key  # noqa: E402
from training.synthetic.shapes import Scene, render  # noqa: E402
from training.synthetic.shift import SHIFT_STYLE, TRAIN_STYLE, RenderStyle, render_shifted  # noqa: E402

FACTORS = ("outline_px", "rotation_deg", "blur_px", "scale")
NAMES = {"outline_px": "outline", "rotation_deg": "rotation", "blur_px": "blur", "scale": "smaller objects"}


def styles() -> dict[str, RenderStyle | None]:
    """Variant name -> style (``None``: the training renderer itself)."""
    out: dict[str, RenderStyle | None] = {"training renderer": None, "shift": SHIFT_STYLE}
    for factor in FACTORS:
        out[f"shift but no {NAMES[factor]}"] = dataclasses.replace(
            SHIFT_STYLE, **{factor: getattr(TRAIN_STYLE, factor)}
        )
    out["background only"] = dataclasses.replace(TRAIN_STYLE, backgrounds=SHIFT_STYLE.backgrounds)
    return out


def score_styles(spec: str, rows: list[dict], seed: int) -> dict[str, float]:
    """t2i R@1 of canonical captions over ``rows``' scenes drawn in each of :func:`styles`."""
    encoder = Encoder.from_spec(spec, device="cpu")
    scenes = [Scene(r["colour"], r["shape"], r["size"], r["position"]) for r in rows]
    texts = encoder.encode_texts([s.caption() for s in scenes])
    keys = [scene_key(r) for r in rows]
    out = {}
    for name, style in styles().items():
        rng = np.random.default_rng([seed, 424242])  # every style from the same seed
        images = encoder.encode_images([_draw(s, rng, style) for s in scenes])
        out[name] = float(retrieval_metrics(images, texts, list(range(len(rows))), keys=keys)["t2i_R@1"])
    return out


def _draw(scene: Scene, rng: np.random.Generator, style: RenderStyle | None):
    return render(scene, rng=rng) if style is None else render_shifted(scene, rng=rng, style=style)


def markdown(args, per_seed: list[dict[str, float]], n_scenes: int, wall_s: float) -> str:
    names = list(per_seed[0])
    mean = {k: float(np.mean([s[k] for s in per_seed])) for k in names}
    base, full = mean["training renderer"], mean["shift"]
    lines = [
        f"## What the shift split's rendering costs, {args.model} (`benchmarks/probe_shift_render.py`)",
        "",
        f"Per seed ({args.seeds}): the LiT bootstrap on a {args.n}-pair shapes world (canonical captions), then the "
        f"{n_scenes} scenes of that seed's shift split drawn again in each style below and retrieved with their "
        "canonical captions (t2i R@1, duplicate-aware; mean over seeds, min–max). *Share of the loss*: of the full "
        "shift's loss against the training renderer (same scenes, same run), how much one factor accounts for: for "
        "*shift but no X*, what putting X back wins (X's share with the others shifted); for *background only*, "
        "what the background loses on its own.",
        "",
        "| style | t2i R@1 | × training renderer | share of the shift's loss |",
        "|---|---|---|---|",
    ]
    for k in names:
        values = [s[k] for s in per_seed]
        spread = f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""
        share = "—"
        if base > full and k not in ("training renderer", "shift"):
            share = f"{((mean[k] - full) if k.startswith('shift but') else (base - mean[k])) / (base - full):.0%}"
        lines.append(f"| {k} | {mean[k]:.3f}{spread} | {mean[k] / base:.2f}x | {share} |")
    lines += [
        "",
        f"Total wall time {wall_s:.0f} s. Reproduce: `.venv/bin/python benchmarks/probe_shift_render.py --model "
        f"{args.model} --seeds {args.seeds} --n {args.n}`",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:lit-mini-spp")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=2000, help="pairs in each seed's world (the shift split has n/10)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    per_seed, n_scenes = [], 0
    for seed in (int(s) for s in args.seeds.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix=f"probe-shift-render-{seed}-"))
        ds, _ = bench_quality.make_world("shapes", args.n, seed, tmp / "ds")
        shift_rows = bench_quality.generate_shift_dataset(tmp / "shift", n=max(1, args.n // 10), seed=seed).rows()
        spec = bench_quality.bootstrap(ds, args.model, seed, tmp / "bootstrap.pt")
        per_seed.append(score_styles(spec, shift_rows, seed))
        n_scenes = len(shift_rows)
        print(seed, {k: round(v, 3) for k, v in per_seed[-1].items()}, flush=True)
    md = markdown(args, per_seed, n_scenes, time.perf_counter() - t0)
    print(md)
    if not args.no_record:
        record(f"probe-shift-render-{args.model.removeprefix('builtin:')}", {"args": vars(args), "seeds": per_seed}, md)


if __name__ == "__main__":
    main()
