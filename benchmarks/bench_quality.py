"""Retrieval quality of fine-tuning recipes on the synthetic world, at an equal step budget.

Every variant starts from the same LiT-bootstrapped `builtin:lit-mini` (projection heads
trained on cached features of the train split) and trains for the same number of steps
at the same batch size, unlocking the last image group and the last text layer:

  (a) projections only (the LiT bootstrap itself, no further steps)
  (b) unlocked layers, plain CLIP loss
  (c) unlocked layers, SigLIP loss
  (d) (b) plus one hard-negative method each: in-batch weighting, momentum queue,
      MoCHi mixing, NegCLIP caption perturbations, ANN-mined batches; and the best
      recipe found with --seeds (queue + three caption perturbations per caption)
  (e) (b) plus all hard-negative methods together

Reported on the held-out test split: Recall@1/5/10 both ways (a retrieved item with the
query's scene counts: for canonical captions, its exact caption) and hard-split binding accuracy
(the image's true caption against the same caption with one attribute swapped). The baseline for
every delta is (b), measured in the same run.

With --shift (shapes world) every model is also scored on a shift split of the same seed
(training/synthetic/shift.py: held-out templates, synonyms and rendering) and a table puts
in-distribution and shift R@1 side by side, per variant (averaged over --seeds when given).
--captions varied words the world from the training pool of training/synthetic/captions.py (--n-captions
wordings per image: the bootstrap trains on all of them, the fine-tunes draw one per epoch);
--text-augment adds the caption augmentations of benchmarks/_quality_shift.py to every fine-tune.

With --models (a comma list) and --seeds, benchmarks/_quality_shift.py compares the models on the
shift split: the bootstrap and the fine-tune recipes, in distribution against shift, per seed.

    .venv/bin/python benchmarks/bench_quality.py [--steps 30] [--batch-size 48] [--shift]
    .venv/bin/python benchmarks/bench_quality.py --models builtin:lit-mini,builtin:lit-mini-spp \
        --seeds 0,1,2 --shift --captions varied --text-augment
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

from benchmarks import _quality_shift  # noqa: E402
from benchmarks._report import record  # noqa: E402
from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.encoder import Encoder  # noqa: E402
from crossmodal_kernel.images import open_image  # noqa: E402
from crossmodal_kernel.loading import load_model  # noqa: E402
from training.bootstrap import BootstrapConfig, bootstrap_heads  # noqa: E402
from training.config import AugmentConfig, TrainConfig  # noqa: E402
from training.evaluate import binding_accuracy, retrieval_metrics  # noqa: E402
from training.sources import parse_captions  # noqa: E402
from training.synthetic.binding import SWAPS, generate_binding_dataset  # noqa: E402
from training.synthetic.captions import scene_key  # noqa: E402
from training.synthetic.shapes import generate_dataset  # noqa: E402
from training.synthetic.shift import generate_shift_dataset  # noqa: E402
from training.trainer import finetune  # noqa: E402

HARD = {
    "in-batch (β=0.2, τ⁺=0.1)": {"beta": 0.2, "tau_plus": 0.1},
    "queue (4096)": {"queue_size": 4096},
    "MoCHi": {"mochi": True},
    "caption perturbations": {"perturb_captions": 1},
    "ANN-mined batches": {"ann_mining": True},
}
# Pairs worth replicating with --seeds (not part of the single-seed (d) rows, which take one method each).
COMBOS = {
    "queue + caption perturbations": {"queue_size": 4096, "perturb_captions": 1},
    "queue + caption perturbations ×3": {"queue_size": 4096, "perturb_captions": 3},
    # The two halves of the in-batch method, to see which one costs binding accuracy.
    "in-batch β=0.2 only": {"beta": 0.2},
    "debiasing τ⁺=0.1 only": {"tau_plus": 0.1},
}
RECIPES = {**HARD, **COMBOS}
BEST = "queue + caption perturbations ×3"  # the recipe that met the goal on held-out seeds (docs/benchmarks.md)
DEFAULT_STEPS, DEFAULT_LR = 30, 2e-4  # the schedule every recorded section without -s/-lr in its name used
GOAL_PTS = 5.0  # binding points the best recipe must add over (b), without losing t2i R@1


def meets_goal(gain_pts: float, delta_r1: float) -> bool:
    """Accuracies are multiples of 1/hard pairs, so an exact +5.0 may come out of float arithmetic as 4.999...9."""
    return gain_pts >= GOAL_PTS - 1e-9 and delta_r1 >= -0.005


ALL = {"beta": 0.2, "tau_plus": 0.1, "queue_size": 4096, "mochi": True, "perturb_captions": 1, "ann_mining": True}


def evaluate(spec: str, ds, attributes) -> dict:
    encoder = Encoder.from_spec(spec, device="cpu")
    test = ds.rows("test")
    img = encoder.encode_images([open_image(str(ds.root / r["image"])) for r in test])
    txt = encoder.encode_texts([r["text"] for r in test])
    report = retrieval_metrics(img, txt, list(range(len(test))), keys=[scene_key(r) for r in test])
    hard = ds.hard_rows()
    by_id = {r["id"]: i for i, r in enumerate(test)}
    hard_img = img[[by_id[h["id"]] for h in hard]]
    report.update(
        binding_accuracy(
            hard_img,
            encoder.encode_texts([h["text"] for h in hard]),
            encoder.encode_texts([h["distractor"] for h in hard]),
            swapped=[h["swapped"] for h in hard],
            attributes=attributes,
        )
    )
    return report


def score(spec: str, ds, attributes, shift_ds=None) -> dict:
    """``evaluate`` on the test split and, with ``shift_ds``, on the shift split too (keys ``shift_*``)."""
    report = evaluate(spec, ds, attributes)
    if shift_ds is not None:
        report |= {f"shift_{k}": v for k, v in evaluate(spec, shift_ds, attributes).items()}
    return report


def shift_split(args, seed: int, tmp: Path):
    """The shift split of ``seed`` (as many items as the test split) with --shift, else ``None``."""
    if not getattr(args, "shift", False):
        return None
    if args.world != "shapes":
        raise SystemExit("--shift: the shift split exists for the shapes world only")
    return generate_shift_dataset(tmp / "shift", n=args.shift_n or max(1, round(0.1 * args.n)), seed=seed)


def shift_table(rows: dict[str, dict]) -> str:
    """Markdown: in-distribution against shift R@1 both ways and binding, with the gaps in points."""
    lines = ["| variant | t2i R@1 in-dist | shift | gap | i2t R@1 in-dist | shift | gap | binding in-dist | shift |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in rows.items():
        cells = []
        for metric in ("t2i_R@1", "i2t_R@1"):
            cells += [f"{r[metric]:.3f}", f"{r[f'shift_{metric}']:.3f}",
                      f"{100 * (r[f'shift_{metric}'] - r[metric]):+.1f} pts"]  # fmt: skip
        cells += [f"{r['binding_acc']:.3f}", f"{r['shift_binding_acc']:.3f}"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def prepare(world: str, n: int, seed: int, tmp: Path, model: str = "builtin:lit-mini", captions: str = "canonical",
            n_captions: int = 1):  # fmt: skip
    """The dataset of ``world`` drawn with ``seed``, and a LiT bootstrap of ``model`` on its train split."""
    ds, attributes = make_world(world, n, seed, tmp / "ds", captions, n_captions)
    return ds, attributes, bootstrap(ds, model, seed, tmp / "bootstrap.pt")


def make_world(world: str, n: int, seed: int, out: Path, captions: str = "canonical", n_captions: int = 1):
    """The dataset of ``world`` drawn with ``seed`` (worded as asked), and the attributes its hard pairs swap."""
    k = n_captions if captions == "varied" else 1
    if world.startswith("binding"):
        layout = "free" if world == "binding-free" else "sides"
        return generate_binding_dataset(out, n=n, seed=seed, layout=layout, captions=captions, n_captions=k), SWAPS
    return generate_dataset(out, n=n, seed=seed, captions=captions, n_captions=k), ("colour", "shape", "position")


def bootstrap(
    ds, model: str, seed: int, path: Path, views: int = 0, synonym_wordings: int = 0, illumination: bool = False
) -> str:
    """The spec of ``model`` with LiT heads trained on ``ds``'s train split (every caption of a varied world;
    ``views`` augmented views of each image beside the clean one, lit unevenly with ``illumination``
    instead of the default crop and blur; ``synonym_wordings`` WordNet rewordings of each image's captions)."""
    loaded = load_model(model, "cpu")
    rows = ds.rows("train")
    train = [(str(ds.root / r["image"]), r["text"]) for r in rows]
    captions = [parse_captions(r.get("captions")) for r in rows]
    cfg = BootstrapConfig(seed=seed, image_views=views, synonym_wordings=synonym_wordings)
    if illumination:
        cfg.view_augment = AugmentConfig(crop_scale=(0.9, 1.0), illumination=1.0)
    bootstrap_heads(loaded, train, cfg, captions=captions if any(captions) else None)
    return f"{model}@{save_checkpoint(loaded, path)}"


def finetune_from(args, ds, base_spec: str, out: Path, seed: int = 0, over: dict | None = None) -> Path:
    """Fine-tune ``base_spec`` on ``ds`` with the shared recipe plus ``over``; the checkpoint's path."""
    raw = {
        "model": base_spec,
        "device": "cpu",
        "output_dir": str(out),
        "seed": seed,
        "data": {"manifest": str(ds.manifest), "split_column": "split", "num_workers": 1},
        "lock": {"image_unlocked_groups": args.image_groups, "text_unlocked_layers": args.text_layers},
        "optim": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": 3},
        "checkpoint_every": 10_000,
        "eval_every": 10_000,
        **(over or {}),
    }
    checkpoint = finetune(TrainConfig.model_validate(raw)).checkpoint
    if checkpoint is None:
        raise RuntimeError(f"fine-tuning into {out} wrote no checkpoint")
    return Path(checkpoint)


def train_variant(args, ds, attributes, base_spec: str, out: Path, seed: int = 0, shift_ds=None, **over) -> dict:
    """Fine-tune ``base_spec`` with the shared recipe plus ``over`` and score it on the test (and shift) split."""
    started = time.perf_counter()
    checkpoint = finetune_from(args, ds, base_spec, out, seed, {**_quality_shift.text_policy(args), **over})
    scores = score(f"{args.model}@{checkpoint}", ds, attributes, shift_ds)
    return {**scores, "train_s": time.perf_counter() - started}


def setup(args) -> tuple[str, str, str, str]:
    """(record-name suffix, title label, prose, extra reproduce flags) for this run's model and unlocking."""
    suffix, labels, flags = "", [], ""
    if args.model != "builtin:lit-mini":
        suffix += "-" + args.model.split("lit-mini-")[-1]
        labels.append(args.model.removeprefix("builtin:"))
        flags += f" --model {args.model}"
    other_lr = args.lr != DEFAULT_LR
    if args.steps != DEFAULT_STEPS or other_lr:
        suffix += f"-s{args.steps}" + (f"-lr{args.lr:g}" if other_lr else "")
        labels.append(f"{args.steps} steps at lr {args.lr:g}")
        flags += f" --lr {args.lr:g}" if other_lr else ""  # --steps is on every reproduce line already
    if (args.image_groups, args.text_layers) != (1, 1):
        suffix += f"-g{args.image_groups}t{args.text_layers}"
        labels.append(f"{args.image_groups} image groups / {args.text_layers} text layers unlocked")
        flags += f" --image-groups {args.image_groups} --text-layers {args.text_layers}"
    if getattr(args, "captions", "canonical") == "varied":
        suffix += f"-varied{args.n_captions}"
        labels.append(f"varied captions ({args.n_captions} per image)")
        flags += f" --captions varied --n-captions {args.n_captions}"
    if getattr(args, "text_augment", False):
        suffix, flags = suffix + "-textaug", flags + " --text-augment"
        labels.append("text augmentation")
    if getattr(args, "shift", False):
        suffix, flags = suffix + "-shift", flags + " --shift"
        flags += f" --shift-n {args.shift_n}" if getattr(args, "shift_n", None) else ""
        labels.append("with the shift split")
    pooling = "a 1x1 + 2x2 spatial pyramid" if args.model.endswith("-spp") else "global average pooling"
    prose = (f"`{args.model}` (image features by {pooling}), the last {args.image_groups} image parameter\n"
             f"group(s) and {args.text_layers} text layer(s) unlocked")  # fmt: skip
    return suffix, "".join(f", {label}" for label in labels), prose, flags


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--lr", type=float, default=DEFAULT_LR)
    ap.add_argument("--world", choices=("shapes", "binding", "binding-free"), default="shapes",
                    help="shapes: one object, distractors swap an attribute; binding: two objects, one per "
                    "side, distractors swap which colour goes with which shape, or the sides; binding-free: "
                    "the same with the objects anywhere, often in the same half")  # fmt: skip
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds: replicate (b) against the --variants on fresh data, bootstrap and "
                    "training seeds each, and report the paired difference (e.g. 0,1,2,3)")  # fmt: skip
    ap.add_argument("--variants", default="queue (4096)",
                    help=f"with --seeds: comma-separated hard-negative recipes out of {list(RECIPES)}")  # fmt: skip
    ap.add_argument("--model", choices=("builtin:lit-mini", "builtin:lit-mini-spp"), default="builtin:lit-mini",
                    help="lit-mini pools image features globally, lit-mini-spp over a 1x1 + 2x2 pyramid")  # fmt: skip
    ap.add_argument("--image-groups", type=int, default=1,
                    help="unlocked image parameter groups from the top (1 = the final 1x1 conv; each more is one "
                    "MBConv block)")  # fmt: skip
    ap.add_argument("--text-layers", type=int, default=1, help="unlocked text transformer layers from the top")
    ap.add_argument("--tag", default="", help="appended to the recorded section's name, to keep a run beside "
                    "another of the same setup instead of replacing it")  # fmt: skip
    ap.add_argument(
        "--shift",
        action="store_true",
        help="also score every model on a shift split (held-out wording and rendering; shapes world)",
    )
    ap.add_argument("--shift-n", type=int, default=None, help="shift split size (default: the test split's)")
    _quality_shift.add_options(ap)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.models:
        compare_models(args)
        return
    if args.seeds:
        replicate(args)
        return
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    ds, attributes, base_spec = prepare(args.world, args.n, 0, tmp, args.model, **_quality_shift.wording(args))
    shift_ds = shift_split(args, 0, tmp)
    rows: dict[str, dict] = {"(a) projections only (LiT)": score(base_spec, ds, attributes, shift_ds)}
    print("(a)", rows["(a) projections only (LiT)"], flush=True)

    def run(name: str, **over) -> None:
        rows[name] = train_variant(args, ds, attributes, base_spec, tmp / f"run-{len(rows)}", shift_ds=shift_ds,
                                   **over)  # fmt: skip
        print(name, rows[name], flush=True)

    run("(b) unlocked, CLIP")
    run("(c) unlocked, SigLIP", loss={"kind": "siglip"})
    for name, hn in {**HARD, BEST: RECIPES[BEST]}.items():
        run(f"(d) CLIP + {name}", hard_negatives=hn)
    run("(e) CLIP + all hard negatives", hard_negatives=ALL)

    base = rows["(b) unlocked, CLIP"]
    lines = [
        f"| variant | t2i R@1 | R@5 | R@10 | i2t R@1 | R@5 | R@10 | binding | Δ vs (b) | {' / '.join(attributes)} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        per = " / ".join(f"{r[f'binding_acc_{a}']:.2f}" for a in attributes)
        lines.append(
            f"| {name} | {r['t2i_R@1']:.3f} | {r['t2i_R@5']:.3f} | {r['t2i_R@10']:.3f} | {r['i2t_R@1']:.3f} | "
            f"{r['i2t_R@5']:.3f} | {r['i2t_R@10']:.3f} | {r['binding_acc']:.3f} | "
            f"{100 * (r['binding_acc'] - base['binding_acc']):+.1f} pts | {per} |"
        )
    hard_rows = {k: v for k, v in rows.items() if k.startswith(("(d)", "(e)"))}
    best_name = max(hard_rows, key=lambda k: hard_rows[k]["binding_acc"])
    best = hard_rows[best_name]
    gain = 100 * (best["binding_acc"] - base["binding_acc"])
    r1_kept = best["t2i_R@1"] >= base["t2i_R@1"] - 1e-9
    met = meets_goal(gain, 0.0) and r1_kept
    world = {"shapes": "one-object world: distractors swap one attribute",
             "binding": "two-object world: distractors swap which colour goes with which shape (colour) "
             "or the two objects' sides (order)",
             "binding-free": "two-object world with objects anywhere (often both in one half): distractors "
             "swap which colour goes with which shape or which object is left"}[args.world]  # fmt: skip
    suffix, label, prose, flags = setup(args)
    shift_md = _shift_section(rows, shift_ds, "")
    cmd = f"benchmarks/bench_quality.py --world {args.world}{flags}"
    title = f"Fine-tuning quality, {args.world} world{label} (`{cmd}`)"
    md = f"""## {title}

{prose}, on the synthetic {world} ({args.n} pairs; test split {len(ds.rows("test"))} images,
{len(ds.hard_rows())} hard pairs). (a) is the LiT bootstrap (projection heads on cached features);
(b)–(e) continue from it for {args.steps} steps at batch {args.batch_size}, lr {args.lr}. Binding accuracy: the
image scores its true caption above the same caption with one attribute swapped (ties count as wrong; chance 0.5).

{chr(10).join(lines)}

Best hard-negative recipe: **{best_name}**, {gain:+.1f} points of binding accuracy over plain fine-tuning
(b), t2i R@1 {"kept" if r1_kept else "**lost**"} ({best["t2i_R@1"]:.3f} vs {base["t2i_R@1"]:.3f}).
Goal: ≥ +5 points without losing R@1 — {"met" if met else "**not met**"}.
{shift_md}Total wall time {time.perf_counter() - t0:.0f} s on this machine.
Reproduce: `.venv/bin/python benchmarks/bench_quality.py --world {args.world} --steps {args.steps} \\
--batch-size {args.batch_size}{flags}`
"""
    print(md)
    if not args.no_record:
        result = {"args": vars(args), "rows": rows, "best": best_name, "binding_gain_pts": gain}
        record(f"quality-{args.world}{suffix}", result, md)


def replicate(args) -> None:
    """(b) plain CLIP against each of ``--variants``, once per seed, each seed a fresh dataset and bootstrap."""
    seeds = [int(x) for x in args.seeds.split(",")]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(RECIPES)}")
    t0 = time.perf_counter()
    per_seed: list[dict] = []
    for seed in seeds:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-quality-{seed}-"))
        ds, attributes, base_spec = prepare(args.world, args.n, seed, tmp, args.model, **_quality_shift.wording(args))
        shift_ds = shift_split(args, seed, tmp)
        runs = {"(a) bootstrap": score(base_spec, ds, attributes, shift_ds)}
        runs["(b) unlocked, CLIP"] = train_variant(args, ds, attributes, base_spec, tmp / "b", seed=seed,
                                                   shift_ds=shift_ds)  # fmt: skip
        for i, v in enumerate(variants):  # one output folder each: a shared one would resume the last run
            runs[f"(d) CLIP + {v}"] = train_variant(args, ds, attributes, base_spec, tmp / f"d{i}", seed=seed,
                                                    shift_ds=shift_ds, hard_negatives=RECIPES[v])  # fmt: skip
        per_seed.append({"seed": seed, "hard_pairs": len(ds.hard_rows()), "runs": runs})
        print(seed, {k: round(r["binding_acc"], 3) for k, r in runs.items()}, flush=True)

    base = "(b) unlocked, CLIP"
    lines = ["| seed | hard pairs | " + " | ".join(f"{k}: binding / t2i R@1" for k in per_seed[0]["runs"]) + " |",
             "|---|---|" + "---|" * len(per_seed[0]["runs"])]  # fmt: skip
    for s in per_seed:
        cells = " | ".join(f"{r['binding_acc']:.3f} / {r['t2i_R@1']:.3f}" for r in s["runs"].values())
        lines.append(f"| {s['seed']} | {s['hard_pairs']} | {cells} |")

    def paired(name: str, metric: str) -> np.ndarray:
        """Per seed, the recipe's ``metric`` minus plain CLIP's on the same seed."""
        return np.array([s["runs"][name][metric] - s["runs"][base][metric] for s in per_seed])

    summary, verdicts = {}, []
    for v in variants:
        name = f"(d) CLIP + {v}"
        gain, dr1 = 100 * paired(name, "binding_acc"), paired(name, "t2i_R@1")
        sem = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else float("nan")
        per_attr = {a: float(100 * paired(name, f"binding_acc_{a}").mean()) for a in attributes}
        summary[name] = {"gain_pts": gain.tolist(), "mean_gain_pts": float(gain.mean()), "sem_pts": float(sem),
                         "mean_delta_t2i_R@1": float(dr1.mean()), "mean_gain_pts_by_swap": per_attr}  # fmt: skip
        by_swap = ", ".join(f"{a} {g:+.1f}" for a, g in per_attr.items())
        met = meets_goal(float(gain.mean()), float(dr1.mean()))
        verdicts.append(f"**{name}**: binding {gain.mean():+.1f} ± {sem:.1f} pts (mean ± s.e.m. over "
                        f"{len(gain)} seeds; per seed {', '.join(f'{g:+.1f}' for g in gain)}), t2i R@1 "
                        f"{dr1.mean():+.3f} on average; by swap {by_swap}. Goal ≥ +5 pts without losing R@1 — "
                        f"{'met' if met else '**not met**'}.")  # fmt: skip
    suffix, label, prose, flags = setup(args)
    flags += f" --tag {args.tag}" if args.tag else ""
    shift_md = _shift_section(_mean_runs(per_seed), shift_ds, f" (means over seeds {args.seeds})")
    title = f"Fine-tuning quality over seeds, {args.world} world{label} (`benchmarks/bench_quality.py --seeds`)"
    md = f"""## {title}

{prose}. Each seed draws a fresh dataset ({args.n} pairs), LiT bootstrap (a)
and training order; (b) plain CLIP and the hard-negative recipe(s) then train {args.steps} steps at batch
{args.batch_size}, lr {args.lr} from the same bootstrap, so the difference is paired.

{chr(10).join(lines)}

{chr(10).join(verdicts)}
{shift_md}Total wall time {time.perf_counter() - t0:.0f} s on this machine.
Reproduce: `.venv/bin/python benchmarks/bench_quality.py --world {args.world} --seeds {args.seeds} \\
--variants "{args.variants}" --steps {args.steps} --batch-size {args.batch_size}{flags}`
"""
    print(md)
    if not args.no_record:
        name = f"quality-{args.world}-seeds{suffix}" + (f"-{args.tag}" if args.tag else "")
        record(name, {"args": vars(args), "seeds": per_seed, "summary": summary}, md)


def compare_models(args) -> dict:
    """--models: every model's bootstrap and fine-tune recipes on the test and shift splits, over --seeds."""
    if not (args.seeds and args.shift) or args.world != "shapes":
        raise SystemExit("--models compares on the shift split: give --seeds and --shift (shapes world)")

    def world(args, seed: int, tmp: Path):
        ds, _ = make_world("shapes", args.n, seed, tmp / "ds", args.captions, args.n_captions)
        return ds, shift_split(args, seed, tmp)

    def train(args, ds, base: str, out: Path, seed: int, over: dict) -> Path:
        return finetune_from(args, ds, base, out, seed, over)

    def boot(ds, model: str, seed: int, path: Path, **again) -> str:
        return bootstrap(ds, model, seed, path, **({"views": args.bootstrap_views} | again))

    return _quality_shift.compare(args, world, boot, train, record)


def _mean_runs(per_seed: list[dict]) -> dict[str, dict]:
    """Per run name, the mean over seeds of every numeric score the runs share."""
    names = per_seed[0]["runs"]
    return {name: {k: float(np.mean([s["runs"][name][k] for s in per_seed])) for k, v in names[name].items()
                   if isinstance(v, (int, float)) and all(s["runs"][name].get(k) is not None for s in per_seed)}
            for name in names}  # fmt: skip


def _shift_section(rows: dict[str, dict], shift_ds, note: str) -> str:
    """The side-by-side table with its caption, or nothing without --shift."""
    if shift_ds is None:
        return ""
    return (f"\nIn distribution (test split) against the shift split{note}: {len(shift_ds.rows())} images worded "
            f"and drawn in ways training never shows (training/synthetic/shift.py); the gap is shift minus "
            f"in-distribution.\n\n{shift_table(rows)}\n\n")  # fmt: skip


if __name__ == "__main__":
    main()
