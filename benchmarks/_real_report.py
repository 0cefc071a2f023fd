"""The markdown section of benchmarks/bench_real.py: recipes per split, ablations against the same-run
baseline, the fine-tunes, the ceilings, and the issue's goals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks._real_data import SPLITS

GOALS = {"b": 0.40, "c": 0.85}  # issue 23: held-out concepts and held-out house, t2i R@1, mean of 3 seeds
TODAY = {"a": None, "b": 0.19, "c": 0.66}


def _values(runs: list[dict], letter: str, metric: str = "t2i_R@1") -> np.ndarray:
    return np.array([r["metrics"][letter][metric] for r in runs], dtype=float)


def _ms(a: np.ndarray, digits: int = 3) -> str:
    if len(a) == 0:
        return "–"
    sd = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():.{digits}f} ± {sd:.{digits}f}"


def _paired(runs: list[dict], base: list[dict], letter: str) -> np.ndarray:
    """Per (salt, seed), the recipe's t2i R@1 minus the baseline's on the same (salt, seed)."""
    at = {(r["data"], r["seed"]): r for r in base}
    return np.array([r["metrics"][letter]["t2i_R@1"] - at[(r["data"], r["seed"])]["metrics"][letter]["t2i_R@1"]
                     for r in runs if (r["data"], r["seed"]) in at])  # fmt: skip


def verdict(diffs: dict[str, np.ndarray]) -> str:
    """helps / hurts / no clear effect on (b) and (c), by a paired difference beyond 2 standard errors."""
    if all(len(d) < 2 for d in diffs.values()):
        return "one run: no verdict"
    words = []
    for letter in ("b", "c", "a"):
        d = diffs[letter]
        if len(d) < 2:
            continue
        se = d.std(ddof=1) / np.sqrt(len(d))
        if d.mean() > max(2 * se, 0.005):
            words.append(f"helps ({letter})")
        elif d.mean() < -max(2 * se, 0.005):
            words.append(f"hurts ({letter})")
    return ", ".join(words) or "no clear effect"


def recipe_table(rows: dict[str, list[dict]], baseline_of: Callable[[str], str | None]) -> list[str]:
    """t2i R@1 mean ± sd per split, the paired difference against each row's baseline, wall time."""
    head = "| recipe | runs | " + " | ".join(f"({k}) {SPLITS[k][0]}" for k in SPLITS) + " | s / run | verdict |"
    lines = [head, "|---|---|" + "---|" * len(SPLITS) + "---|---|"]
    for name, runs in rows.items():
        cells = []
        diffs = {}
        baseline = baseline_of(name)
        for letter in SPLITS:
            cell = _ms(_values(runs, letter))
            if baseline and name != baseline and baseline in rows:
                d = _paired(runs, rows[baseline], letter)
                diffs[letter] = d
                cell += f" ({100 * d.mean():+.1f})" if len(d) else ""
            cells.append(cell)
        secs = np.mean([r["seconds"] for r in runs]) if runs else float("nan")
        mark = f"vs {baseline}: {verdict(diffs)}" if diffs else ("baseline" if baseline is None else "")
        lines.append(f"| {name} | {len(runs)} | {' | '.join(cells)} | {secs:.0f} | {mark} |")
    return lines


def detail_table(runs: list[dict]) -> list[str]:
    """Every metric of one recipe per split, mean ± sd over its runs, with pool size and chance level."""
    lines = ["| split | pool (images) | chance R@1 | t2i R@1 | R@5 | R@10 | median rank | i2t R@1 (name or caption) "
             "| i2t R@1 (names only) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for letter, (label, _) in SPLITS.items():
        pool = np.mean(_values(runs, letter, "t2i_pool"))
        chance = np.mean(_values(runs, letter, "t2i_chance_R@1"))
        cells = [_ms(_values(runs, letter, m)) for m in ("t2i_R@1", "t2i_R@5", "t2i_R@10")]
        cells.append(_ms(_values(runs, letter, "t2i_median_rank"), 1))
        cells += [_ms(_values(runs, letter, m)) for m in ("i2t_R@1", "i2t_names_R@1")]
        lines.append(f"| ({letter}) {label} | {pool:.0f} | {chance:.4f} | {' | '.join(cells)} |")
    return lines


def per_house(runs: list[dict]) -> list[str]:
    sets = {name: [r["metrics"][k]["sets"][name]["t2i_R@1"] for r in runs]
            for k in SPLITS for name in runs[0]["metrics"][k]["sets"]}  # fmt: skip
    return ["| set | t2i R@1 |", "|---|---|"] + [f"| `eval/{n}.jsonl` | {_ms(np.array(v))} |" for n, v in sets.items()]


def goals(runs: list[dict], baseline: list[dict] | None) -> str:
    out = []
    for letter, goal in GOALS.items():
        v = _values(runs, letter)
        out.append(f"({letter}) t2i R@1 {v.mean():.3f} against the goal {goal:.2f}: "
                   f"{'**met**' if v.mean() >= goal else '**not met**'}")  # fmt: skip
    if baseline:
        a, a0 = _values(runs, "a").mean(), _values(baseline, "a").mean()
        out.append(f"(a) {a:.3f} against the old recipe's {a0:.3f}: {'no lower' if a >= a0 - 0.005 else '**lower**'}")
    return "; ".join(out) + "."


def _extra_rows(manifest: str | None) -> str:
    """What the `+ openclipart` rows add, counted from the manifest when it is still there."""
    path = Path(manifest) if manifest and manifest != "None" else None
    n = sum(1 for _ in path.open()) if path is not None and path.is_file() else None
    count = f"its {n:,} rows" if n is not None else "its rows"
    return (f"`… + openclipart` rows also train on `{manifest}` ({count}: Debian's openclipart-svg drawings, many "
            "artists, each named by its own title and keywords, `crossmodal datasets openclipart`), each its own "
            "concept, under the same recipe; their baseline is the same recipe without them.\n")  # fmt: skip


def _ft_baseline(ft: dict) -> Callable[[str], str | None]:
    """A fine-tune's same-run baseline: `masked` for the `masked + …` rows (what they add to it), `plain` for
    `masked` itself and any other."""

    def of(name: str) -> str | None:
        if name == "plain" or "plain" not in ft:
            return None
        return "masked" if name.startswith("masked +") and "masked" in ft else "plain"

    return of


def markdown(result: dict, args) -> str:
    from benchmarks._real_recipes import BASELINE, DEFAULT, EMOJI, baseline_of

    boot, ft, analyses = result["bootstrap"], result["finetune"], result["analyses"]
    seeds, data = args.seeds, args.data
    what = {"finetune": ", fine-tuning", "synthetic": ", the synthetic check",
            "finetune-ablations": ", fine-tuning ablations", "openclipart": ", more concepts from openclipart"}.get(
        args.tag, "")  # fmt: skip
    parts = [f"## Real data: emoji by four design houses{what} (`benchmarks/bench_real.py`)\n",
             f"`{args.model}`; datasets `{data}` (one per split salt), seeds {seeds}: every figure is the mean ± sd "
             "over all (salt, seed) runs; in brackets the paired difference in t2i R@1 points against the "
             "baseline on the same salt and seed. Splits: (a) validation concepts drawn by the training houses "
             "(apple, google, twitter), (b) held-out concepts by the same houses, (c) the held-out house "
             "(facebook) drawing the training concepts, (d) facebook drawing the held-out concepts. Each figure "
             "is the per-house set (one drawing per concept, so chance R@1 is 1 / pool), averaged over the houses "
             "of the split. Hit rule (training/evaluate.py `concept_retrieval_metrics`): text → image, any "
             "drawing of the query's concept; image → text, the concept's name or any of its captions (each "
             "distinct string once in the pool); \"names only\" ranks the names alone.\n"]  # fmt: skip
    if not (boot or ft):
        parts = parts[:1]
    if boot:
        parts += ["### Bootstrap recipes and ablations (LiT heads on cached features)\n",
                  f"`{BASELINE}` is the bootstrap as it was (siblings are negatives, one caption of the name and "
                  "keywords drawn per epoch), the same-run baseline of the rows that change one thing in it; "
                  f"`{DEFAULT}` is `BootstrapConfig()` now, what `crossmodal bootstrap` runs (siblings masked, the "
                  "name every step with the drawn keyword caption as a 0.2-weighted second loss); "
                  f"`{EMOJI}` adds dropout 0.5 on the image features (`feature_dropout=0.5`: best on this data, "
                  "but it costs the synthetic world, so it is opt-in), the baseline of the "
                  f"`{EMOJI} + …` rows. Features were "
                  f"encoded once and cached ({result['encode_s']:.0f} s this run, including any encoding the cache "
                  "had not seen); augmented views are drawn once per policy (seed 0) and shared by the training seeds. "
                  "Verdict: a paired difference beyond two standard errors (and 0.5 points).\n",
                  *recipe_table(boot, lambda n: None if n == BASELINE else baseline_of(n)), ""]  # fmt: skip
        if any(name.endswith("+ openclipart") for name in boot):
            parts.append(_extra_rows(getattr(args, "extra_train", None)))
        for name in (DEFAULT, EMOJI):
            if name in boot:
                parts += [f"Every metric of `{name}`:\n", *detail_table(boot[name]), "",
                          "Per-house sets:\n", *per_house(boot[name]), "",
                          f"Goals for `{name}`: {goals(boot[name], boot.get(BASELINE))}\n"]  # fmt: skip
        shares = {k: np.mean([r["siblings_share"] for r in v]) for k, v in boot.items()}
        if BASELINE in boot:
            parts.append(f"Rows that share a batch of 256 with a sibling (same concept or same drawn caption): "
                         f"{shares[BASELINE]:.1%} of rows per step; under `mask` none of those pairs "
                         "is pushed apart.\n")  # fmt: skip
    if ft:
        parts += [
            "### Fine-tuning (the trainer, towers locked as `finetune` defaults)\n",
            f"On `{args.ft_data or data.split(',')[0]}`, seeds {args.ft_seeds or seeds} "
            f"({args.ft_ablation_seeds or 'all'} for the recipes beyond plain and masked): "
            f"{args.ft_steps} steps at batch {args.ft_batch_size} (the default 300 cut short for 2 shared "
            f"CPU cores), each from its bootstrap: `plain` from the old bootstrap with siblings as "
            f"negatives, the others from `{EMOJI}` with `data.group_column: concept`; the `masked + …` rows are "
            "compared with `masked`, `masked` with `plain`. Seconds include the bootstrap checkpoint, training "
            "and scoring.\n",
            *recipe_table(ft, _ft_baseline(ft)),
            "",
        ]
    if analyses:
        parts.append("### Where held-out concepts stop\n")
        if "image2image" in analyses:
            i2i = analyses["image2image"]
            fb = i2i.pop("facebook->train houses (train concepts)", None)
            pairs = ", ".join(f"{k} {v:.2f}" for k, v in i2i.items() if k != "mean")
            parts.append(f"- Frozen image tower, image → image across houses on held-out concepts (salt of "
                         f"`{data.split(',')[0]}`): R@1 {i2i['mean']:.3f} ({pairs}). The tower tells these "
                         "concepts apart across houses.")  # fmt: skip
            if fb is not None:
                parts.append(
                    f"- Frozen image tower, facebook's drawing of a training concept → the nearest of the "
                    f"3,087 training drawings: its concept is right {fb:.3f} of the time. Split (c) asks "
                    "the heads for the same match through text; this is what the tower alone gives."
                )
        if "oracle" in analyses:
            o = analyses["oracle"]
            recipe = o.get("recipe", EMOJI)
            parts.append(
                "- Oracle heads trained on the held-out concepts themselves (apple + google drawings), scored "
                f"on twitter's held-out set: t2i R@1 {o['both']:.3f}, against {o['default']:.3f} for `{recipe}` "
                "trained on the training concepts. Half oracles, from those heads: only the image head refitted "
                f"on the held-out concepts {o['image head refitted']:.3f}, only the text head "
                f"{o['text head refitted']:.3f}. Linear heads on these frozen features separate the concepts once "
                "they have seen them; the gap to the oracle is transfer from 1,029 training concepts."
            )
        parts.append("")
    if result.get("synthetic"):
        from benchmarks._real_synthetic import table

        parts += [
            "### The synthetic world, old and new defaults\n",
            "bench_quality.py's default recipe (shapes world, 2000 pairs, `builtin:lit-mini`; bootstrap (a), "
            "then 30 steps of CLIP fine-tuning (b) with one image group and one text layer unlocked), "
            f"seeds {args.synthetic_seeds}, in this run: `before` is the bootstrap and fine-tune as they were "
            "before issue 23 (same-caption rows as negatives, no caption weight or feature dropout), `after` "
            "today's defaults; `emoji recipe (dropout 0.5)`, where present, the defaults of the moment the run "
            "was made, with `feature_dropout=0.5`.\n",
            *table(result["synthetic"]),
            "",
        ]
    parts.append(f"Total wall time {result['wall_s']:.0f} s on this machine (2 shared cores).\n")
    cmd = (f".venv/bin/python benchmarks/bench_real.py --data {data} --seeds {seeds} --variants \"{args.variants}\" "
           f"--ft-variants \"{args.ft_variants}\" --ft-steps {args.ft_steps}")  # fmt: skip
    if args.ft_seeds:
        cmd += f" --ft-seeds {args.ft_seeds}"
    if args.ft_ablation_seeds:
        cmd += f" --ft-ablation-seeds {args.ft_ablation_seeds}"
    if args.synthetic_seeds not in ("", "none"):
        cmd += f" --synthetic-seeds {args.synthetic_seeds}"
    if args.ft_data:
        cmd += f" --ft-data {args.ft_data}"
    parts.append(f"Reproduce (after `crossmodal datasets emoji data/emoji` and `crossmodal datasets emoji "
                 f"data/emoji-salt1 --salt 1`): `{cmd}`")  # fmt: skip
    return "\n".join(parts) + "\n"
