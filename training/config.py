"""The fine-tuning configuration: one pydantic model, loaded from YAML, validated up front.

Every field has the value a first run should use; a YAML file only names what it changes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    manifest: Path | None = Field(
        None, description="CSV / JSONL / Parquet with `image` and `text` columns (or `finetune --from-db`)."
    )
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share held out by a stable hash of the pair.")
    split_column: str | None = Field(
        None, description="Use this manifest column (values train/val) instead of the hash split."
    )
    num_workers: int = Field(
        default_factory=lambda: max(1, min(8, (os.cpu_count() or 2) // 2)),
        ge=0,
        description="Decoding workers; default half the cores (decoding competes with the forward pass).",
    )
    drop_noisy_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Score every pair with the starting model and drop this worst share."
    )
    group_column: str | None = Field(
        None,
        description="Manifest column naming each row's concept (e.g. `concept` in the emoji manifests): rows of one "
        "concept are siblings, left out of each other's negatives (`loss.siblings`). Rows with the same `text` or "
        "the same drawn caption are siblings whatever this says.",
    )


class TextAugmentConfig(_Strict):
    """Caption augmentations, drawn per sample from ``(seed, epoch, index)`` like the image ones.

    Each is off at its default (training then sees exactly the manifest's ``text``); applied in
    this order: pick a caption, paraphrase, substitute synonyms, shuffle clauses, drop words.
    Validation never augments. Values that suit captions: ``paraphrase: 0.5``, ``synonyms: 0.3``,
    ``shuffle_clauses: 0.3``, ``word_dropout: 0.1``.
    """

    multi_caption: bool = Field(
        False,
        description="Train on one caption per epoch, drawn from `text` and the manifest's `captions` column (a JSON "
        "list of strings; a native list in JSONL / Parquet). Rows without one keep `text`.",
    )
    paraphrase: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability of rewording the caption from the row's scene columns (the synthetic worlds' "
        "colour/shape/size/position or left_/right_ colour and shape) with training-pool templates and synonyms; "
        "a no-op for rows without them.",
    )
    shuffle_clauses: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability of shuffling a caption's comma- or semicolon-separated clauses."
    )
    word_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Probability of dropping each word; at least one word always stays."
    )
    synonyms: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability of replacing each word (stop words excepted) with a WordNet synonym, similar "
        "adjective or hyponym (training/thesaurus.py); needs a WordNet database (`apt-get install wordnet-base`).",
    )
    wordnet_dir: str | None = Field(
        None, description="Folder of WordNet's data.* files; default: $CROSSMODAL_WORDNET_DIR, NLTK's, Debian's."
    )

    @property
    def enabled(self) -> bool:
        return bool(self.multi_caption or self.paraphrase or self.shuffle_clauses or self.word_dropout or self.synonyms)


class AugmentConfig(_Strict):
    """Which image augmentations the training transform applies (each switchable), and under ``text``
    which caption augmentations."""

    crop_scale: tuple[float, float] = (0.9, 1.0)
    flip: bool = False  # off by default: captions often name left and right
    colour_jitter: float = Field(0.0, ge=0.0, le=1.0, description="0 disables; colour is often in the caption.")
    grayscale: float = Field(0.0, ge=0.0, le=1.0, description="Probability of a grayscale copy.")
    blur: float = Field(0.0, ge=0.0, le=1.0, description="Probability of a Gaussian blur.")
    rotation: float = Field(
        0.0, ge=0.0, le=45.0, description="Largest angle of a random rotation in degrees; 0 disables. It moves "
        "off-centre objects a little, so keep it small where captions name positions."
    )  # fmt: skip
    illumination: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability of uneven light: each colour channel scaled along a random linear gradient "
        "(training.pairs.RandomIllumination); hue kept, so captions' colours stay true.",
    )
    text: TextAugmentConfig = Field(default_factory=TextAugmentConfig, description="Caption augmentations.")

    @model_validator(mode="after")
    def _scale(self):
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        return self


class LossConfig(_Strict):
    kind: Literal["clip", "siglip"] = "clip"
    siblings: Literal["mask", "negative"] = Field(
        "mask",
        description="Rows of one concept (`data.group_column`, or the same text or caption): `mask` leaves them "
        "out of each other's negatives in every contrastive loss (training/losses/siblings.py); `negative` pushes "
        "them apart like any other row.",
    )


class SSLConfig(_Strict):
    """A self-supervised image objective on two augmented views, weighted beside the cross-modal loss."""

    kind: Literal["simclr", "byol", "barlow_twins"] | None = None
    weight: float = Field(0.5, ge=0.0)
    image_only: bool = Field(
        False, description="Adapt the image tower on images alone: no captions needed, no cross-modal loss."
    )
    projector_hidden: int = Field(512, ge=8)
    projector_dim: int = Field(128, ge=8)
    temperature: float = Field(0.5, gt=0.0, description="SimCLR NT-Xent temperature.")
    lambda_offdiag: float = Field(5e-3, gt=0.0, description="Barlow Twins off-diagonal weight.")
    momentum: float = Field(0.996, gt=0.0, lt=1.0, description="BYOL base EMA momentum (cosine to 1).")


class HardNegativeConfig(_Strict):
    """Hard-negative methods; each is off at its default and any combination may be switched on."""

    beta: float = Field(
        0.0, ge=0.0, description="In-batch hardness weighting (Robinson et al. 2021); ~0.1-0.2 at CLIP scales."
    )
    tau_plus: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Debiasing class prior (Chuang et al. 2020). Keep 0 for captioned pairs: 0.1 cost 7.5 binding "
        "points in benchmarks/bench_quality.py, as captions are nearly unique (docs/benchmarks.md).",
    )
    queue_size: int = Field(
        0, ge=0, le=65_536, description="Memory queue of momentum-encoded keys used as extra negatives."
    )
    queue_momentum: float = Field(0.999, gt=0.0, lt=1.0)
    mochi: bool = Field(False, description="Synthetic negatives by mixing the hardest ones (Kalantidis et al. 2020).")
    mochi_hardest: int = Field(16, ge=2)
    mochi_synthetic: int = Field(16, ge=1)
    perturb_captions: int = Field(
        0, ge=0, description="NegCLIP: perturbed copies of each caption added as extra text negatives."
    )
    ann_mining: bool = Field(False, description="Mine each pair's nearest non-matching pairs and batch them together.")
    ann_k: int = Field(8, ge=1)
    ann_margin: float = Field(0.05, ge=0.0, description="Skip candidates within this of the positive's score.")

    @property
    def enabled(self) -> bool:
        return bool(
            self.beta or self.tau_plus or self.queue_size or self.mochi or self.perturb_captions or self.ann_mining
        )


class DistributedConfig(_Strict):
    local_loss: bool = Field(
        False, description="Each rank scores only its own rows against the gathered batch (plain CLIP only)."
    )
    gather_with_grad: bool = True


class LockConfig(_Strict):
    """LiT-style locking: ``None`` trains the whole tower, 0 locks it, N unlocks its last N groups/layers."""

    image_unlocked_groups: int | None = Field(0, ge=0)
    text_unlocked_layers: int | None = Field(0, ge=0)
    freeze_bn_stats: bool = Field(True, description="BatchNorm layers keep their running statistics.")


class OptimConfig(_Strict):
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(20, ge=0)
    steps: int = Field(300, ge=1)
    batch_size: int = Field(64, ge=2, description="The global contrastive batch (split across torchrun ranks).")
    chunk_size: int | None = Field(
        None, ge=1, description="GradCache: encode at most this many examples with autograd at once; same gradients."
    )
    grad_clip: float | None = Field(1.0, gt=0)
    amp: bool = Field(True, description="Mixed precision (only used on CUDA).")
    dropout: bool = Field(
        False, description="Keep the towers' dropout on while training (off: heads fit on clean features stay valid)."
    )


class TrainConfig(_Strict):
    model: str = "builtin:lit-mini"
    output_dir: Path = Path("runs/finetune")
    seed: int = 0
    device: str = "auto"
    data: DataConfig
    augment: AugmentConfig = AugmentConfig()
    loss: LossConfig = LossConfig()
    ssl: SSLConfig = SSLConfig()
    hard_negatives: HardNegativeConfig = HardNegativeConfig()
    distributed: DistributedConfig = DistributedConfig()
    lock: LockConfig = LockConfig()
    optim: OptimConfig = OptimConfig()
    checkpoint_every: int = Field(50, ge=1)
    eval_every: int = Field(50, ge=1)
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without a better val R@1."
    )
    wise_ft_alpha: float = Field(
        1.0, ge=0.0, le=1.0, description="WiSE-FT: final = (1-a)·base + a·fine-tuned; 1 keeps the fine-tuned."
    )

    @model_validator(mode="after")
    def _combinations(self):
        if self.ssl.image_only and self.ssl.kind is None:
            raise ValueError("ssl.image_only needs an ssl.kind (simclr, byol or barlow_twins)")
        if self.hard_negatives.enabled and self.loss.kind != "clip":
            raise ValueError("hard_negatives work with loss.kind 'clip' (the InfoNCE family)")
        if self.hard_negatives.enabled and self.ssl.image_only:
            raise ValueError("hard_negatives need captions; ssl.image_only has none")
        if self.distributed.local_loss and (self.loss.kind != "clip" or self.hard_negatives.enabled):
            raise ValueError("distributed.local_loss is implemented for plain CLIP loss only")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: the top level must be a mapping")
        return cls.model_validate(raw)


# The LiT bootstrap's settings (training.bootstrap): a dataclass, as it is built in code and in
# benchmarks rather than read from YAML like TrainConfig.
@dataclass
class BootstrapConfig:
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    seed: int = 0
    encode_batch_size: int = 64
    num_workers: int = 2
    image_views: int = 0  # augmented views per image beside the clean one
    view_augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(crop_scale=(0.7, 1.0), blur=0.5))
    synonym_wordings: int = 0  # extra captions per image, its own with WordNet substitutions (training.thesaurus)
    synonyms: float = 0.3  # each word's chance of being substituted in such a wording
    wordnet_dir: str | None = None
    # Same-concept rows (a shared group key or the same caption): "mask" leaves them out of each other's
    # negatives, "positive" counts shared groups as positives, "negative" is plain CLIP (training.losses.siblings).
    siblings: Literal["mask", "positive", "negative"] = "mask"
    image_align: float = 0.0  # weight of an InfoNCE between the image embeddings of sibling drawings
    temperature: float = 0.07  # the initial temperature (logit scale 1/temperature)
    learn_temperature: bool = True
    text_head_frozen: bool = False  # keep the text head as it starts (LiT's locked side, on the text)
    loss: Literal["clip", "siglip"] = "clip"
    name_share: float = 0.0  # with several captions per image: the chance an epoch draws the first (the name)
    # With several captions per image: > 0 trains every step on the first caption (the name) and adds this
    # weight times the loss on the drawn caption; 0 trains on the drawn caption alone. 0.2: on the emoji
    # data, keywords drawn alone cost the held-out house 19 points of R@1 (docs/findings.md F29).
    caption_weight: float = 0.2
    # Dropout on the image head's input features while training. 0.5 with caption_weight raised every emoji
    # split, but cost the synthetic world 6 points of bootstrap R@1, so it is opt-in (docs/findings.md F30).
    feature_dropout: float = 0.0
    hard_beta: float = 0.0  # in-batch hardness weighting of the CLIP loss (Robinson et al., 2021); 0: plain
    feature_cache: str = "auto"  # folder of cached tower features; "auto": training.features.default_cache_dir

    def __post_init__(self):
        if self.image_views < 0:
            raise ValueError(f"image_views must be >= 0, got {self.image_views}")
        if self.synonym_wordings < 0:
            raise ValueError(f"synonym_wordings must be >= 0, got {self.synonym_wordings}")
        if not 0.0 < self.synonyms <= 1.0:
            raise ValueError(f"synonyms must be in (0, 1], got {self.synonyms}")
        if self.siblings not in ("mask", "positive", "negative"):
            raise ValueError(f"siblings must be mask, positive or negative, got {self.siblings!r}")
        if self.image_align < 0:
            raise ValueError(f"image_align must be >= 0, got {self.image_align}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.caption_weight < 0 or not 0.0 <= self.feature_dropout < 1.0:
            raise ValueError(f"caption_weight must be >= 0 and feature_dropout in [0, 1): {self}")
        if not 0.0 <= self.name_share <= 1.0:
            raise ValueError(f"name_share must be in [0, 1], got {self.name_share}")
        if self.loss not in ("clip", "siglip") or self.hard_beta < 0 or (self.hard_beta and self.loss != "clip"):
            raise ValueError(f"loss clip or siglip, hard_beta >= 0 only with clip: {self.loss} {self.hard_beta}")

    def report(self) -> dict:
        """The settings as plain JSON values."""
        out = {k: v for k, v in asdict(self).items() if k != "view_augment"}
        return {**out, "view_augment": self.view_augment.model_dump(mode="json")}
