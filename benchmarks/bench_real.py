"""Retrieval on real data: emoji drawn by four design houses, named by CLDR (issue 23).

The LiT bootstrap (projection heads trained on cached frozen-tower features) and the fine-tune
recipe that continues from it, scored on every split of ``crossmodal datasets emoji``:

  (a) val: the training houses' drawings of validation concepts;
  (b) held-out concepts, drawn by the training houses;
  (c) the held-out house (facebook) drawing the training concepts;
  (d) the held-out house drawing the held-out concepts.

Figures are the per-house sets (``eval/<subset>-<house>.jsonl``: one drawing per concept, so the
pool holds each concept once and chance is 1 / pool), averaged over the houses of a split, under
the concept hit rule (training/evaluate.py ``concept_retrieval_metrics``). Every recipe runs over
``--seeds`` and every ``--data`` folder (one per split salt); a table gives mean ± sd over all
(salt, seed) runs, and each ablation's paired difference against the same-run baseline.

Bootstrap recipes train on features cached on disk by image content and tower identity
(training/features.py), so a rerun encodes nothing. Fine-tune recipes run the real trainer
(training/trainer.py) for ``--ft-steps`` steps from a bootstrap checkpoint.

    .venv/bin/python benchmarks/bench_real.py --data data/emoji,data/emoji-salt1 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.runtime import apply_runtime_defaults  # noqa: E402

apply_runtime_defaults()

from benchmarks import _real_recipes as recipes  # noqa: E402
from benchmarks._real_data import SPLITS, add_extra, feature_bank, load_split  # noqa: E402
from benchmarks._real_report import markdown  # noqa: E402
from benchmarks._report import record  # noqa: E402
from crossmodal_kernel.loading import load_model  # noqa: E402
from training.bootstrap import BootstrapConfig  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/emoji,data/emoji-salt1", help="comma-separated dataset folders (salts)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--model", default="builtin:lit-mini-spp")
    ap.add_argument("--variants", default="all", help=f"bootstrap ablations: all, none, or a comma list of "
                    f"{list(recipes.BOOTSTRAP_VARIANTS)}")  # fmt: skip
    ap.add_argument("--ft-variants", default="plain,masked",
                    help=f"fine-tune recipes (none to skip): {list(recipes.FINETUNE_VARIANTS)}")  # fmt: skip
    ap.add_argument("--ft-steps", type=int, default=60)
    ap.add_argument("--ft-batch-size", type=int, default=64)
    ap.add_argument("--ft-seeds", default=None, help="seeds of the fine-tunes (default: --seeds)")
    ap.add_argument(
        "--ft-ablation-seeds",
        default=None,
        help="seeds of the other fine-tune recipes than plain and masked (default: --ft-seeds)",
    )
    ap.add_argument("--ft-data", default=None, help="folders of the fine-tunes (default: the first of --data)")
    ap.add_argument("--epochs", type=int, default=None, help="bootstrap epochs (default: BootstrapConfig's)")
    ap.add_argument("--analyses", default="oracle,image2image", help="ceiling analyses (none to skip)")
    ap.add_argument("--synthetic-seeds", default="none",
                    help="also run bench_quality's default recipe on the synthetic world with the old and the new "
                    "defaults, for these seeds (e.g. 0)")  # fmt: skip
    ap.add_argument("--extra-train", type=Path, default=None,
                    help="a manifest of more training rows, used by the recipes marked '+ openclipart' (e.g. "
                    "`crossmodal datasets openclipart data/openclipart`'s manifest.jsonl)")  # fmt: skip
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--feature-cache", default="auto")
    ap.add_argument("--tag", default="", help="appended to the recorded section's name")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--merge", default=None,
                    help="comma-separated --json results of runs split by --data or --seeds (same recipes): record "
                    "them as one run, without running anything")  # fmt: skip
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args)

    t0 = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    folders = [Path(p) for p in args.data.split(",")]
    splits = [load_split(p) for p in folders]
    for split in splits if args.extra_train else ():
        add_extra(split, args.extra_train)
    loaded = load_model(args.model, "cpu")
    base = BootstrapConfig(num_workers=args.num_workers, feature_cache=args.feature_cache)
    if args.epochs:
        base.epochs = args.epochs
    t_enc = time.perf_counter()
    bank = feature_bank(loaded, splits, base)
    encode_s = time.perf_counter() - t_enc
    print(f"features ready in {encode_s:.0f} s", flush=True)

    names = recipes.pick(args.variants, recipes.BOOTSTRAP_VARIANTS)
    boot = recipes.run_bootstrap_grid(loaded, bank, splits, folders, seeds, names, base)
    analyses = recipes.run_analyses(loaded, bank, splits, base, args.analyses.split(","))
    ft_names = recipes.pick(args.ft_variants, recipes.FINETUNE_VARIANTS)
    ft = {}
    if ft_names:
        ft_seeds = [int(s) for s in (args.ft_seeds or args.seeds).split(",")]
        ft_folders = [Path(p) for p in (args.ft_data or str(folders[0])).split(",")]
        with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
            ablation_seeds = [int(s) for s in args.ft_ablation_seeds.split(",")] if args.ft_ablation_seeds else None
            ft = recipes.run_finetune_grid(args, loaded, bank, ft_folders, ft_seeds, ft_names, base, Path(tmp),
                                           ablation_seeds)  # fmt: skip
    synthetic = {}
    if args.synthetic_seeds not in ("", "none"):
        from benchmarks._real_synthetic import synthetic_check

        synthetic = synthetic_check([int(s) for s in args.synthetic_seeds.split(",")])
    result = {
        "recipes_version": 2,
        "args": {k: str(v) for k, v in vars(args).items()},
        "synthetic": synthetic,
        "encode_s": encode_s,
        "bootstrap": boot,
        "finetune": ft,
        "analyses": analyses,
        "wall_s": time.perf_counter() - t0,
    }
    md = markdown(result, args)
    print(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))
    if not args.no_record:
        record("real-emoji" + (f"-{args.tag}" if args.tag else ""), result, md)
    return result


def merge(args) -> dict:
    """Several results of one grid run in parts (e.g. one process per salt) as one recorded run."""
    parts = [recipes.relabel_v1(json.loads(Path(p).read_text())) for p in args.merge.split(",")]
    result: dict = {"args": parts[0]["args"], "encode_s": sum(p["encode_s"] for p in parts),
                    "wall_s": max(p["wall_s"] for p in parts), "bootstrap": {}, "finetune": {}, "analyses": {},
                    "synthetic": {}, "merged_from": args.merge, "recipes_version": 2}  # fmt: skip
    for p in parts:
        for kind in ("bootstrap", "finetune"):
            for name, runs in p[kind].items():
                result[kind].setdefault(name, []).extend(runs)
        result["analyses"] = result["analyses"] or p.get("analyses", {})
        result["synthetic"] = result["synthetic"] or p.get("synthetic", {})
    saved = argparse.Namespace(**{**result["args"], "data": ",".join(dict.fromkeys(
        d for p in parts for d in p["args"]["data"].split(","))), "seeds": ",".join(dict.fromkeys(
        s for p in parts for s in p["args"]["seeds"].split(",")))})  # fmt: skip
    for key in ("ft_seeds", "ft_data", "ft_ablation_seeds"):
        if getattr(saved, key) in ("None", ""):
            setattr(saved, key, None)
    saved.ft_steps = int(saved.ft_steps)
    result["args"] = vars(saved)
    md = markdown(result, saved)
    print(md)
    if not args.no_record:
        record("real-emoji" + (f"-{args.tag}" if args.tag else ""), result, md)
    return result


def mean_sd(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


__all__ = ["main", "mean_sd", "SPLITS"]

if __name__ == "__main__":
    main()
