"""The emoji dataset as cached tower features, for benchmarks/bench_real.py.

Every image of a dataset folder (whatever its salt: the drawings are the same bytes) is encoded
once per tower identity through :mod:`training.features`; texts likewise. A recipe that trains
only the heads is then trained and scored on features alone: seconds, not minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import features
from training.bootstrap import BootstrapConfig, tower_features, wordings
from training.eval_sets import EvalPairs, concept_report, manifest_pairs

TRAIN_HOUSES = ("apple", "google", "twitter")
HELDOUT_HOUSE = "facebook"
# split letter -> (label, per-house evaluation sets under eval/)
SPLITS: dict[str, tuple[str, tuple[str, ...]]] = {
    "a": ("val (train houses, val concepts)", tuple(f"val-{h}" for h in TRAIN_HOUSES)),
    "b": ("held-out concepts", tuple(f"heldout_concepts-{h}" for h in TRAIN_HOUSES)),
    "c": ("held-out house, train concepts", (f"heldout_house-{HELDOUT_HOUSE}",)),
    "d": ("held-out house and concepts", (f"heldout_both-{HELDOUT_HOUSE}",)),
}
METRICS = ("t2i_R@1", "t2i_R@5", "t2i_R@10", "t2i_median_rank", "i2t_R@1", "i2t_names_R@1")


@dataclass
class Split:
    """One salt's training rows and evaluation sets, with the features they need."""

    root: Path
    train: list[tuple[str, str]]  # (image path, name)
    captions: list[tuple[str, ...]]
    groups: list[str]  # concept per training row
    houses: list[str]
    sets: dict[str, EvalPairs] = field(default_factory=dict)  # "val-apple" -> its rows
    extra: list[tuple[str, str]] = field(default_factory=list)  # more training rows (--extra-train), by recipe
    extra_captions: list[tuple[str, ...]] = field(default_factory=list)
    extra_groups: list[str] = field(default_factory=list)

    def with_extra(self) -> Split:
        """This split with the extra rows among its training rows (its evaluation sets unchanged)."""
        return replace(self, train=self.train + self.extra, captions=self.captions + self.extra_captions,
                       groups=self.groups + self.extra_groups, houses=self.houses + ["extra"] * len(self.extra),
                       extra=[], extra_captions=[], extra_groups=[])  # fmt: skip


def add_extra(split: Split, manifest: Path) -> None:
    """``manifest``'s rows as ``split``'s extra training rows (e.g. ``crossmodal datasets openclipart``'s);
    a row without a concept is its own."""
    rows = manifest_pairs(manifest)
    split.extra = list(zip(rows.images, rows.texts, strict=True))
    split.extra_captions = list(rows.captions or [() for _ in rows.images])
    split.extra_groups = [f"extra:{c or i}" for i, c in enumerate(rows.concepts or [None] * len(rows.images))]


def load_split(root: Path) -> Split:
    """``root``'s train rows (``train.jsonl``) and its per-house evaluation sets."""
    rows = manifest_pairs(root / "train.jsonl", "train")
    if rows.concepts is None:
        raise SystemExit(f"{root}/train.jsonl has no concept column: rebuild it with `crossmodal datasets emoji`")
    houses = [p.split("/")[-2] for p in rows.images]
    split = Split(root, list(zip(rows.images, rows.texts, strict=True)), list(rows.captions or []),
                  list(rows.concepts), houses)  # fmt: skip
    for _, names in SPLITS.values():
        for name in names:
            split.sets[name] = manifest_pairs(root / "eval" / f"{name}.jsonl")
    return split


@dataclass
class FeatureBank:
    """Clean-view image features by content hash and text features by string, for one model's towers."""

    image: dict[str, torch.Tensor]
    text: dict[str, torch.Tensor]
    hash_of: dict[str, str]

    def images(self, paths: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.image[self.hash_of[p]] for p in paths])

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.text[t] for t in texts])


def feature_bank(loaded, splits: Sequence[Split], cfg: BootstrapConfig, progress=None) -> FeatureBank:
    """Features of every image and text the splits use, through the on-disk cache."""
    root = Path(cfg.feature_cache).expanduser() if cfg.feature_cache not in ("auto", "off", "") else None
    root = features.default_cache_dir() if cfg.feature_cache == "auto" else root
    paths = sorted({p for s in splits for p in [*(i for i, _ in s.train + s.extra),
                                                *(x for e in s.sets.values() for x in e.images)]})  # fmt: skip
    hashes = features.hash_images(paths)
    store = features.FeatureStore(root, features.tower_identity(loaded, "image"), features.CLEAN)
    image = features.image_features(loaded, paths, hashes, store, cfg.encode_batch_size, cfg.num_workers, progress)
    texts: set[str] = set()
    for s in splits:
        for (_, name), caps in zip(s.train + s.extra, s.captions + s.extra_captions, strict=True):
            texts.update(wordings(name, caps))
        for e in s.sets.values():
            texts.update(e.texts)
            texts.update(t for caps in (e.captions or []) for t in caps if t.strip())
    ordered = sorted(texts)
    tstore = features.FeatureStore(root, features.tower_identity(loaded, "text"), features.TEXT)
    txt = features.text_features(loaded, ordered, tstore, progress=progress)
    hash_of = {p: h for p, h in zip(paths, hashes, strict=True) if h is not None}
    return FeatureBank(image, dict(zip(ordered, txt, strict=True)), hash_of)


def view_bank(loaded, split: Split, cfg: BootstrapConfig, progress=None) -> torch.Tensor:
    """``1 + cfg.image_views`` blocks of training-image features (clean, then each augmented view)."""
    out = tower_features(loaded, split.train, cfg, progress)
    if len(out.keys) != len(split.train):
        raise SystemExit(f"{len(split.train) - len(out.keys)} training images did not decode")
    return out.img


def evaluate_heads(
    image_head: Callable[[torch.Tensor], torch.Tensor],
    text_head: Callable[[torch.Tensor], torch.Tensor],
    bank: FeatureBank,
    split: Split,
) -> dict[str, dict]:
    """Per split letter, the mean over its per-house sets of the concept-rule metrics (and each set's own)."""
    out: dict[str, dict] = {}
    with torch.no_grad():
        for letter, (_, names) in SPLITS.items():
            per_set = {}
            for name in names:
                pairs = split.sets[name]
                img = F.normalize(image_head(bank.images(pairs.images)), dim=-1).numpy()

                def encode(texts: list[str]) -> np.ndarray:
                    return F.normalize(text_head(bank.texts(texts)), dim=-1).numpy()

                per_set[name] = concept_report(img, pairs, encode)
            mean = {m: float(np.mean([r[m] for r in per_set.values()])) for m in METRICS}
            mean["t2i_pool"] = float(np.mean([r["t2i_pool"] for r in per_set.values()]))
            mean["t2i_chance_R@1"] = float(np.mean([r["t2i_chance_R@1"] for r in per_set.values()]))
            out[letter] = {**mean, "sets": {k: {m: v[m] for m in (*METRICS, "t2i_pool")} for k, v in per_set.items()}}
    return out


def model_heads(loaded) -> tuple[nn.Module, nn.Module]:
    """The live model's projection heads (image, text), in eval mode on the CPU."""
    from training.bootstrap import _heads

    image_head, text_head = _heads(loaded.model)
    return image_head.float().cpu().eval(), text_head.float().cpu().eval()
