"""The recipes and ablations of benchmarks/bench_real.py: bootstrap variants trained on cached features,
fine-tune variants through the real trainer, and the ceiling analyses."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._real_data import FeatureBank, Split, evaluate_heads, feature_bank, load_split, model_heads, view_bank
from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.loading import load_model
from training import features
from training.bootstrap import BootstrapConfig, fit_heads, text_identity, wordings
from training.config import AugmentConfig, TrainConfig
from training.eval_sets import concept_report
from training.trainer import finetune

BASELINE = "plain"
DEFAULT = "default"  # the recipe BootstrapConfig() runs now: what `crossmodal bootstrap` does
EMOJI = (
    "emoji recipe"  # the default plus dropout 0.5 on the image features: best on emoji, worse on the synthetic world
)
# name -> what the recipe changes from the baseline (the bootstrap as it was before issue 23):
#   cfg: BootstrapConfig fields; captions: train on the keyword captions too (default True);
#   head: ("mlp", hidden width) instead of the model's linear heads; views: augmented views per image
#   (with "augment", an AugmentConfig dict); wise: WiSE-FT alpha between the untrained and trained heads;
#   features: "global" (the pyramid's 1x1 level only) or "scaled" (each feature over its std);
#   extra: also train on the --extra-train manifest's rows.
OLD = {"siblings": "negative", "caption_weight": 0.0, "feature_dropout": 0.0}  # BootstrapConfig before issue 23
MASK = {**OLD, "siblings": "mask"}
DROP = {"feature_dropout": 0.5}
BOOTSTRAP_VARIANTS: dict[str, dict] = {
    BASELINE: {"cfg": OLD},
    DEFAULT: {"cfg": {}},  # = MASK + caption_weight 0.2
    EMOJI: {"cfg": DROP},
    # One change each from the old recipe (baseline: plain)
    "names only (no keyword captions)": {"cfg": OLD, "captions": False},
    "mask siblings": {"cfg": MASK},
    "siblings as positives": {"cfg": {**OLD, "siblings": "positive"}},
    "mask + feature dropout 0.5": {"cfg": {**MASK, "feature_dropout": 0.5}},
    # On top of the emoji recipe (baseline: emoji recipe)
    f"{EMOJI} + MLP heads (hidden 1024)": {"cfg": DROP, "head": ("mlp", 1024)},
    f"{EMOJI} + MLP heads (hidden 256)": {"cfg": DROP, "head": ("mlp", 256)},
    f"{EMOJI} + SigLIP loss": {"cfg": {**DROP, "loss": "siglip"}},
    f"{EMOJI} + in-batch hard negatives (β=0.1)": {"cfg": {**DROP, "hard_beta": 0.1}},
    f"{EMOJI} + image alignment of sibling drawings (w=0.3)": {"cfg": {**DROP, "image_align": 0.3}},
    f"{EMOJI} + frozen text head": {"cfg": {**DROP, "text_head_frozen": True}},
    f"{EMOJI} + WiSE-FT (α=0.7)": {"cfg": DROP, "wise": 0.7},
    f"{EMOJI} + feature dropout 0.8": {"cfg": {"feature_dropout": 0.8}},
    f"{EMOJI} + 120 epochs": {"cfg": {**DROP, "epochs": 120}},
    f"{EMOJI} + 2 views (crop + blur)": {"cfg": DROP, "views": 2},
    f"{EMOJI} + 2 views (crop + colour)": {
        "cfg": DROP,
        "views": 2,
        "augment": {"crop_scale": (0.7, 1.0), "colour_jitter": 0.5},
    },  # fmt: skip
    # Explored on one seed while choosing the default (docs/findings.md)
    # more concepts: another source's drawings and words among the training rows (--extra-train)
    f"{DEFAULT} + openclipart": {"cfg": {}, "extra": True},
    f"{EMOJI} + openclipart": {"cfg": DROP, "extra": True},
    "names + mask": {"cfg": MASK, "captions": False},
    "names + mask + MLP 1024": {"cfg": MASK, "captions": False, "head": ("mlp", 1024)},
    "names + mask + feature dropout 0.5": {"cfg": {**MASK, "feature_dropout": 0.5}, "captions": False},
    "names + mask + feature dropout 0.8": {"cfg": {**MASK, "feature_dropout": 0.8}, "captions": False},
    "names + mask + 200 epochs": {"cfg": {**MASK, "epochs": 200}, "captions": False},
    "names + mask + image alignment (w=0.3)": {"cfg": {**MASK, "image_align": 0.3}, "captions": False},
    "mask + name half the epochs": {"cfg": {**MASK, "name_share": 0.5}},
    "mask + keyword loss w=0.1 + feature dropout 0.5": {
        "cfg": {**MASK, "caption_weight": 0.1, "feature_dropout": 0.5}
    },  # fmt: skip
    "mask + global pool only (lit-mini)": {"cfg": MASK, "features": "global"},
    "mask + scaled features": {"cfg": MASK, "features": "scaled"},
    "mask + 20 epochs": {"cfg": {**MASK, "epochs": 20}},
    "mask + weight decay 1.0": {"cfg": {**MASK, "weight_decay": 1.0}},
    "mask + temperature 0.03 fixed": {"cfg": {**MASK, "temperature": 0.03, "learn_temperature": False}},
}


def baseline_of(name: str) -> str:
    """The same-run baseline a recipe's difference is taken against."""
    if name.startswith(EMOJI + " +"):
        return EMOJI
    return DEFAULT if name.startswith(DEFAULT + " +") else BASELINE


def relabel_v1(result: dict) -> dict:
    """A result recorded while dropout 0.5 was still the default (before ``recipes_version`` 2), in today's
    names: its ``default`` is the ``emoji recipe``, and ``mask + name every step + keywords as a 0.2 loss``
    ran exactly today's ``BootstrapConfig()``."""
    if result.get("recipes_version", 1) >= 2:
        return result

    def new_name(name: str) -> str:
        if name == "default":
            return EMOJI
        if name.startswith("default +"):
            return EMOJI + name.removeprefix("default")
        return DEFAULT if name == "mask + name every step + keywords as a 0.2 loss" else name

    renamed = {new_name(name): runs for name, runs in result.get("bootstrap", {}).items()}
    args = result.get("args", {})
    if args.get("variants") not in (None, "none", "all", ""):
        args["variants"] = ",".join(new_name(n) for n in args["variants"].split(","))
    order = [BASELINE, DEFAULT, EMOJI]
    result["bootstrap"] = {**{k: renamed[k] for k in order if k in renamed},
                           **{k: v for k, v in renamed.items() if k not in order}}  # fmt: skip
    if result.get("synthetic"):
        result["synthetic"] = {("before" if k == "before" else "emoji recipe (dropout 0.5)"): v
                               for k, v in result["synthetic"].items()}  # fmt: skip
    result["recipes_version"] = 2
    return result


# name -> (the bootstrap it starts from, TrainConfig overrides). The out-of-the-box fine-tune trains
# the heads only (the towers locked), on the manifest's `text` (the CLDR name).
FINETUNE_VARIANTS: dict[str, tuple[str, dict]] = {
    "plain": (BASELINE, {"loss": {"siblings": "negative"}}),
    "masked": (EMOJI, {"data": {"group_column": "concept"}}),
    "masked + keyword captions": (
        EMOJI,
        {"data": {"group_column": "concept"}, "augment": {"text": {"multi_caption": True}}},
    ),  # fmt: skip
    "masked + SigLIP": (EMOJI, {"data": {"group_column": "concept"}, "loss": {"kind": "siglip"}}),
    "masked + in-batch β=0.1": (EMOJI, {"data": {"group_column": "concept"}, "hard_negatives": {"beta": 0.1}}),
    "masked + queue 1024": (EMOJI, {"data": {"group_column": "concept"}, "hard_negatives": {"queue_size": 1024}}),
    "masked + NegCLIP perturbations": (
        EMOJI,
        {"data": {"group_column": "concept"}, "hard_negatives": {"perturb_captions": 1}},
    ),  # fmt: skip
    "masked + ANN-mined batches": (
        EMOJI,
        {"data": {"group_column": "concept"}, "hard_negatives": {"ann_mining": True}},
    ),  # fmt: skip
    "masked + SimCLR auxiliary": (EMOJI, {"data": {"group_column": "concept"}, "ssl": {"kind": "simclr"}}),
    "masked + crops and colour": (
        EMOJI,
        {"data": {"group_column": "concept"}, "augment": {"crop_scale": (0.7, 1.0), "colour_jitter": 0.5}},
    ),  # fmt: skip
    "masked + WiSE-FT α=0.5": (EMOJI, {"data": {"group_column": "concept"}, "wise_ft_alpha": 0.5}),
    "masked + unlock 1 image group and 1 text layer": (
        EMOJI,
        {"data": {"group_column": "concept"}, "lock": {"image_unlocked_groups": 1, "text_unlocked_layers": 1}},
    ),
}


def pick(spec: str, known: dict) -> list[str]:
    if spec in ("", "none"):
        return []
    if spec == "all":
        return list(known)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; choose from {list(known)}")
    return names


# ----------------------------------------------------------------------------- bootstrap on features


class MLPHead(nn.Module):
    """Linear -> GELU -> Linear: the nonlinear projection head of SimCLR (Chen et al., 2020)."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def fresh_heads(loaded, head: tuple[str, int] | None, seed: int) -> tuple[nn.Module, nn.Module]:
    """Copies of the model's (untrained) heads, or MLP heads of the same shapes."""
    image_head, text_head = model_heads(loaded)
    if head is None:
        return copy.deepcopy(image_head), copy.deepcopy(text_head)
    torch.manual_seed(seed)
    dims = [(h.in_features, h.out_features) for h in (_linear(image_head), _linear(text_head))]
    return MLPHead(dims[0][0], head[1], dims[0][1]), MLPHead(dims[1][0], head[1], dims[1][1])


def _linear(head: nn.Module) -> nn.Linear:
    return next(m for m in head.modules() if isinstance(m, nn.Linear))


def training_tensors(bank: FeatureBank, split: Split, captions: bool):
    """(text features, counts, group keys, text ids) of a split's training rows."""
    per_row = [wordings(name, caps if captions else ()) for (_, name), caps in zip(split.train, split.captions,
                                                                                   strict=True)]  # fmt: skip
    texts = [t for ws in per_row for t in ws]
    ids: dict[tuple[str, str], int] = {}
    keys = [[ids.setdefault(("g", g), len(ids)), ids.setdefault(("t", name), len(ids))]
            for g, (_, name) in zip(split.groups, split.train, strict=True)]  # fmt: skip
    return bank.texts(texts), [len(w) for w in per_row], torch.tensor(keys), text_identity(texts)


def bootstrap_run(loaded, bank: FeatureBank, split: Split, seed: int, recipe: dict, base: BootstrapConfig,
                  views_cache: dict) -> tuple[dict, dict, tuple[nn.Module, nn.Module]]:  # fmt: skip
    """Train one recipe's heads on ``split`` with ``seed``; its metrics per split letter, its report, its heads."""
    cfg = replace(base, seed=seed, **recipe.get("cfg", {}))
    if recipe.get("extra"):
        if not split.extra:
            raise SystemExit("this recipe trains on extra rows too: give --extra-train MANIFEST")
        split = split.with_extra()
    img = bank.images([p for p, _ in split.train])
    views = recipe.get("views", 0)
    if views:
        # Views are drawn once per policy (seed 0) and shared by the training seeds: encoding them is
        # the expensive part, and the training seed still changes which view each epoch draws.
        augment = AugmentConfig(**recipe.get("augment", {"crop_scale": (0.7, 1.0), "blur": 0.5}))
        key = (str(split.root), views, augment.model_dump_json())
        if key not in views_cache:
            vcfg = replace(base, seed=0, image_views=views, view_augment=augment)
            views_cache[key] = view_bank(loaded, split, vcfg)
        img = views_cache[key]
    txt, counts, keys, text_ids = training_tensors(bank, split, recipe.get("captions", True))
    image_head, text_head = fresh_heads(loaded, recipe.get("head"), seed)
    if recipe.get("features") == "global":  # lit-mini's image features: the pyramid's 1x1 level alone
        width = img.shape[1] // 5
        torch.manual_seed(seed)
        image_head = nn.Sequential(_Slice(width), nn.Linear(width, _linear(image_head).out_features, bias=False))
    elif recipe.get("features") == "scaled":  # each input feature divided by its training-set std
        image_head = nn.Sequential(_Scale(1 / img.std(0).clamp(min=1e-6)), image_head)
    start = (copy.deepcopy(image_head), copy.deepcopy(text_head))
    t0 = time.perf_counter()
    report, _ = fit_heads(image_head, text_head, img, txt, cfg, None, counts, 1 + views, keys, text_ids)
    if "wise" in recipe:
        _interpolate(image_head, start[0], recipe["wise"])
        _interpolate(text_head, start[1], recipe["wise"])
    image_head.eval()
    text_head.eval()
    metrics = evaluate_heads(image_head, text_head, bank, split)
    report["seconds"] = time.perf_counter() - t0
    return metrics, report, (image_head, text_head)


class _Slice(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.width]


class _Scale(nn.Module):
    """A fixed per-feature scale (foldable into the next linear layer's weight)."""

    scale: torch.Tensor

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _interpolate(head: nn.Module, start: nn.Module, alpha: float) -> None:
    """WiSE-FT (Wortsman et al., 2022) on a head: (1 - alpha) * start + alpha * trained."""
    with torch.no_grad():
        for p, p0 in zip(head.parameters(), start.parameters(), strict=True):
            p.copy_((1 - alpha) * p0 + alpha * p)


def run_bootstrap_grid(loaded, bank, splits: Sequence[Split], folders, seeds, names, base) -> dict:
    """Every recipe on every (salt, seed): ``{recipe: [{"salt", "seed", "metrics", "seconds", ...}]}``."""
    out: dict[str, list] = {}
    views_cache: dict = {}
    for name in names:
        runs = []
        for folder, split in zip(folders, splits, strict=True):
            for seed in seeds:
                metrics, report, _ = bootstrap_run(loaded, bank, split, seed, BOOTSTRAP_VARIANTS[name], base,
                                                   views_cache)  # fmt: skip
                runs.append({"data": str(folder), "seed": seed, "metrics": metrics, "seconds": report["seconds"],
                             "siblings_share": report["rows_with_a_sibling_in_batch"]})  # fmt: skip
                print(f"[bootstrap] {name} {folder.name} seed {seed}: " + " ".join(
                    f"({k}) {v['t2i_R@1']:.3f}" for k, v in metrics.items()) + f"  {report['seconds']:.0f} s",
                    flush=True)  # fmt: skip
        out[name] = runs
    return out


# ----------------------------------------------------------------------------- ceilings


def run_analyses(loaded, bank: FeatureBank, splits: Sequence[Split], base: BootstrapConfig, which) -> dict:
    """Where the held-out-concept figure stops, on the first salt (see the module docstring of bench_real)."""
    out: dict = {}
    split = splits[0]
    if "image2image" in which:
        out["image2image"] = image_to_image(bank, split)
    if "oracle" in which:
        out["oracle"] = oracle_heads(loaded, bank, split, base)
    return out


def image_to_image(bank: FeatureBank, split: Split) -> dict:
    """R@1 of finding a held-out concept's drawing by another house's drawing, on the frozen features."""
    out = {}
    sets = {h: split.sets[f"heldout_concepts-{h}"] for h in ("apple", "google", "twitter")}
    for a in sets:
        for b in sets:
            if a == b:
                continue
            qa, qb = sets[a], sets[b]
            common = sorted(set(qa.concepts or []) & set(qb.concepts or []))
            ia = {c: p for c, p in zip(qa.concepts or [], qa.images, strict=True)}
            ib = {c: p for c, p in zip(qb.concepts or [], qb.images, strict=True)}
            x = F.normalize(bank.images([ia[c] for c in common]), dim=-1)
            y = F.normalize(bank.images([ib[c] for c in common]), dim=-1)
            sims = x @ y.T
            ranks = (sims >= sims.diagonal()[:, None]).sum(1)
            out[f"{a}->{b}"] = float((ranks <= 1).float().mean())
    out["mean"] = float(np.mean(list(out.values())))
    # The held-out house against every training drawing of the training concepts: the nearest drawing's
    # concept, right or wrong (what split (c) asks of the heads, answered by the frozen tower alone).
    fb = split.sets["heldout_house-facebook"]
    x = F.normalize(bank.images(fb.images), dim=-1)
    y = F.normalize(bank.images([p for p, _ in split.train]), dim=-1)
    nearest = (x @ y.T).argmax(1).tolist()
    out["facebook->train houses (train concepts)"] = float(np.mean(
        [split.groups[j] == c for j, c in zip(nearest, fb.concepts or [], strict=True)]))  # fmt: skip
    return out


def oracle_heads(loaded, bank: FeatureBank, split: Split, base: BootstrapConfig) -> dict:
    """Heads fitted on the held-out concepts themselves (apple and google drawings), scored on twitter's:
    what linear heads on these frozen features reach for those concepts when training has seen them.
    Then the half oracles: the emoji recipe's heads, with only the image head (or only the text head)
    refitted on the held-out concepts, say which side fails to transfer."""
    rows = [split.sets[f"heldout_concepts-{h}"] for h in ("apple", "google")]
    train = [(p, t) for r in rows for p, t in zip(r.images, r.texts, strict=True)]
    oracle = Split(split.root, train, [c for r in rows for c in (r.captions or [])],
                   [c for r in rows for c in (r.concepts or [])], [], split.sets)  # fmt: skip
    recipe = BOOTSTRAP_VARIANTS[EMOJI]
    out: dict = {"trained_on": "heldout_concepts apple + google drawings", "recipe": EMOJI}
    metrics, _, _ = bootstrap_run(loaded, bank, oracle, 0, recipe, base, {})
    out["both"] = metrics["b"]["sets"]["heldout_concepts-twitter"]["t2i_R@1"]
    _, _, trained = bootstrap_run(loaded, bank, split, 0, recipe, base, {})
    out["default"] = evaluate_heads(*trained, bank, split)["b"]["sets"]["heldout_concepts-twitter"]["t2i_R@1"]
    for side, keep in (("image head refitted", 1), ("text head refitted", 0)):
        heads = [copy.deepcopy(h) for h in trained]
        heads[keep].requires_grad_(False)
        cfg = replace(base, seed=0, **recipe.get("cfg", {}))
        txt, counts, keys, text_ids = training_tensors(bank, oracle, recipe.get("captions", True))
        img = bank.images([p for p, _ in oracle.train])
        fit_heads(heads[0], heads[1], img, txt, cfg, None, counts, 1, keys, text_ids)
        scored = evaluate_heads(heads[0].eval(), heads[1].eval(), bank, split)
        out[side] = scored["b"]["sets"]["heldout_concepts-twitter"]["t2i_R@1"]
    return out


# ----------------------------------------------------------------------------- fine-tuning


def run_finetune_grid(args, loaded, bank, folders, seeds, names, base, tmp: Path,
                      ablation_seeds: Sequence[int] | None = None) -> dict:  # fmt: skip
    """Each fine-tune recipe from its bootstrap, per (salt, seed); scored like the bootstrap. Recipes other
    than ``plain`` and ``masked`` run on ``ablation_seeds`` only, when given."""
    out: dict[str, list] = {n: [] for n in names}
    base_ids = _identities(loaded)
    for folder in folders:
        split = load_split(folder)
        for seed in seeds:
            heads: dict[str, tuple] = {}
            for name in names:
                if ablation_seeds is not None and name not in ("plain", "masked") and seed not in ablation_seeds:
                    continue
                boot_name, over = FINETUNE_VARIANTS[name]
                if boot_name not in heads:
                    heads[boot_name] = bootstrap_run(loaded, bank, split, seed, BOOTSTRAP_VARIANTS[boot_name], base,
                                                     {})[2]  # fmt: skip
                t0 = time.perf_counter()
                ckpt = _checkpoint_with(loaded, heads[boot_name], tmp / f"boot-{boot_name}-{seed}.pt")
                metrics = finetune_run(args, folder, split, bank, seed, f"{args.model}@{ckpt}", over,
                                       tmp / f"ft-{folder.name}-{seed}-{names.index(name)}", base_ids)  # fmt: skip
                seconds = time.perf_counter() - t0
                out[name].append({"data": str(folder), "seed": seed, "metrics": metrics, "seconds": seconds})
                print(
                    f"[finetune] {name} {folder.name} seed {seed}: "
                    + " ".join(f"({k}) {v['t2i_R@1']:.3f}" for k, v in metrics.items())
                    + f"  {seconds:.0f} s",
                    flush=True,
                )
    return out


def _checkpoint_with(loaded, heads: tuple[nn.Module, nn.Module], path: Path) -> Path:
    """A checkpoint of ``loaded`` carrying ``heads``; ``loaded`` keeps its own heads."""
    live = model_heads(loaded)
    saved = [copy.deepcopy(h.state_dict()) for h in live]
    try:
        for h, new in zip(live, heads, strict=True):
            h.load_state_dict(new.state_dict())
        return save_checkpoint(loaded, path)
    finally:
        for h, state in zip(live, saved, strict=True):
            h.load_state_dict(state)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def finetune_run(args, folder: Path, split: Split, bank: FeatureBank, seed: int, spec: str, over: dict,
                 out: Path, base_ids: tuple[str, str]) -> dict:  # fmt: skip
    """``crossmodal finetune`` with its defaults (towers locked, 300 steps cut to ``--ft-steps``) on the
    training rows, then every split scored; a fine-tune that changed a tower is re-encoded."""
    raw = _merge({
        "model": spec,
        "device": "cpu",
        "output_dir": str(out),
        "seed": seed,
        "data": {"manifest": str(folder / "train.jsonl"), "split_column": "split",
                 "num_workers": args.num_workers},
        "optim": {"steps": args.ft_steps, "batch_size": args.ft_batch_size,
                  "warmup_steps": min(20, max(1, args.ft_steps // 5))},
        "checkpoint_every": 100_000,
        "eval_every": 100_000,
    }, over)  # fmt: skip
    result = finetune(TrainConfig.model_validate(raw))
    if result.checkpoint is None:
        raise RuntimeError(f"fine-tuning into {out} wrote no checkpoint")
    tuned = load_model(f"{args.model}@{result.checkpoint}", "cpu")
    image_head, text_head = model_heads(tuned)
    tuned_bank = bank
    if _identities(tuned) != base_ids:  # a tower changed: its features are encoded anew (and cached)
        cfg = BootstrapConfig(num_workers=args.num_workers, feature_cache=args.feature_cache)
        tuned_bank = feature_bank(tuned, [split], cfg)
    return evaluate_heads(image_head, text_head, tuned_bank, split)


def _identities(loaded) -> tuple[str, str]:
    return features.tower_identity(loaded, "image"), features.tower_identity(loaded, "text")


__all__ = ["BOOTSTRAP_VARIANTS", "FINETUNE_VARIANTS", "concept_report", "run_bootstrap_grid", "run_finetune_grid"]
