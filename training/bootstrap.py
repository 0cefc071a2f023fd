"""LiT-style bootstrap: train only the projection heads of a two-tower model on cached features.

With both towers frozen, each image and caption goes through its tower once;
the heads then train for many epochs on the cached pooled features, which
takes seconds on a CPU. This is how ``builtin:lit-mini`` gets usable heads
(Zhai et al., 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning").
The full fine-tuning trainer lives elsewhere; this is the minimal one.

A pair may come with several captions of its image (a manifest's ``captions`` column): each
is encoded once, and every epoch trains on one of them per image, drawn at random. Images can
likewise be encoded in ``image_views`` augmented views beside the clean one (the training
augmentation policy of ``view_augment``, seeded per image and view): every epoch trains on one view
per image, so the heads see the renderings an augmentation policy stands for, at a fixed encoding
cost and still without back-propagating through a tower. With ``synonym_wordings`` each pair also
gets that many rewordings of its captions with words replaced by WordNet alternatives
(:mod:`training.thesaurus`), encoded and drawn like a manifest's extra captions: the heads see words
the text tower may not place near the caption's own.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from crossmodal_kernel.encoder import trim_padding
from crossmodal_kernel.images import ImageFiles, collate_images, loader_workers, worker_context
from training.config import AugmentConfig
from training.pairs import Pair, PairDataset, train_transform
from training.thesaurus import load_thesaurus

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


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

    def __post_init__(self):
        if self.image_views < 0:
            raise ValueError(f"image_views must be >= 0, got {self.image_views}")
        if self.synonym_wordings < 0:
            raise ValueError(f"synonym_wordings must be >= 0, got {self.synonym_wordings}")
        if not 0.0 < self.synonyms <= 1.0:
            raise ValueError(f"synonyms must be in (0, 1], got {self.synonyms}")

    def report(self) -> dict:
        """The settings as plain JSON values."""
        out = {k: v for k, v in asdict(self).items() if k != "view_augment"}
        return {**out, "view_augment": self.view_augment.model_dump(mode="json")}


def _heads(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The image and text projection heads of an open_clip timm + HF model."""
    image_head = getattr(model.visual, "head", None)
    text_head = getattr(getattr(model, "text", None), "proj", None)
    if not isinstance(image_head, nn.Module) or not isinstance(text_head, nn.Module):
        raise TypeError(
            "LiT bootstrap needs a model with module projection heads "
            "(open_clip timm image tower + HF text tower, e.g. builtin:lit-mini)"
        )
    return image_head, text_head


class _Capture:
    """Forward pre-hook that records the input of a head: the frozen pooled features."""

    def __init__(self, module: nn.Module):
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args):
        self.value = args[0].detach().float().cpu()


@torch.inference_mode()
def cache_features(
    loaded,
    pairs: Sequence[tuple[str, str]],
    cfg: BootstrapConfig,
    progress: Progress | None = None,
    captions: Sequence[Sequence[str]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Pooled tower features for ``(image path, caption)`` pairs; unreadable images are dropped.

    With ``captions`` (per pair, more captions of its image), the text features are those of
    :func:`wordings` of each kept pair in turn, not one per pair. With ``cfg.image_views``, the
    image features are ``1 + image_views`` blocks of one row per kept pair: the clean view, then
    each augmented view.
    """
    model = loaded.model.eval()
    image_head, text_head = _heads(model)
    img_cap, txt_cap = _Capture(image_head), _Capture(text_head)
    try:
        loader = DataLoader(
            ImageFiles(list(enumerate(p for p, _ in pairs)), loaded.preprocess),
            batch_size=cfg.encode_batch_size,
            num_workers=(workers := loader_workers(cfg.num_workers)),
            collate_fn=collate_images,
            multiprocessing_context=worker_context(workers),
        )
        keys, img_feats = [], []
        for ks, tensors, bad in loader:
            for k, err in bad.items():
                log.warning("skipping unreadable image %s: %s", pairs[k][0], err)
            if tensors is not None:
                model.encode_image(tensors.to(loaded.device))
                img_feats.append(img_cap.value)
                keys.extend(int(k) for k in ks)
            if progress:
                progress("encode images", len(keys), len(pairs))
        texts = [t for k in keys for t in wordings(pairs[k][1], captions[k] if captions else ())]
        txt_feats = []
        for start in range(0, len(texts), cfg.encode_batch_size * 4):
            tokens = trim_padding(model, loaded.tokenizer(texts[start : start + cfg.encode_batch_size * 4]))
            model.encode_text(tokens.to(loaded.device))
            txt_feats.append(txt_cap.value)
            if progress:
                progress("encode texts", min(start + cfg.encode_batch_size * 4, len(texts)), len(texts))
        if keys and cfg.image_views:
            clean = torch.cat(img_feats)
            img_feats = [clean, *_encode_views(loaded, [pairs[k][0] for k in keys], cfg, img_cap, clean, progress)]
    finally:
        img_cap.handle.remove()
        txt_cap.handle.remove()
    if not keys:
        raise ValueError("no readable training images")
    return torch.cat(img_feats), torch.cat(txt_feats), keys


class _Views(torch.utils.data.Dataset):
    """Image ``i`` as ``(i, its augmented views stacked | None)``, seeded by ``(seed, view block, i)``."""

    def __init__(self, paths: Sequence[str], transform: Callable, seed: int, views: int):
        self.inner = PairDataset([Pair(p, None) for p in paths], transform, seed, views)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        out = self.inner[i]
        return i, None if out is None else torch.stack(out[0])


def _stack_views(batch):
    ok = [(i, t) for i, t in batch if t is not None]
    return [i for i, _ in ok], torch.stack([t for _, t in ok]) if ok else None, [i for i, t in batch if t is None]


def _encode_views(
    loaded, paths: Sequence[str], cfg: BootstrapConfig, img_cap: _Capture, clean: torch.Tensor, progress
) -> list[torch.Tensor]:
    """``cfg.image_views`` blocks of features of ``paths``, one augmented view of each image per block.

    An image that no longer decodes keeps its ``clean`` features in every block.
    """
    pp = loaded.model.visual.preprocess_cfg
    transform = train_transform(cfg.view_augment, loaded.image_size, pp["mean"], pp["std"])
    loader = DataLoader(
        _Views(paths, transform, cfg.seed, cfg.image_views),
        batch_size=max(1, cfg.encode_batch_size // cfg.image_views),
        num_workers=(workers := loader_workers(cfg.num_workers)),
        collate_fn=_stack_views,
        multiprocessing_context=worker_context(workers),
    )
    out = clean.unsqueeze(0).repeat(cfg.image_views, 1, 1)
    done = 0
    for idx, tensors, bad in loader:
        for i in bad:
            log.warning("image %s no longer decodes; its augmented views are its clean one", paths[i])
        if tensors is not None:
            b, v = tensors.shape[:2]
            loaded.model.encode_image(tensors.flatten(0, 1).to(loaded.device))
            out[:, idx] = img_cap.value.reshape(b, v, -1).transpose(0, 1)
        done += len(idx) + len(bad)
        if progress:
            progress("encode image views", done, len(paths))
    return list(out)


def wordings(text: str, captions: Sequence[str]) -> list[str]:
    """``text`` and then ``captions``, blanks and repeats left out (``[text]`` without captions)."""
    return list(dict.fromkeys(t for t in (text, *captions) if t.strip())) or [text]


def synonym_captions(
    pairs: Sequence[tuple[str, str]], captions: Sequence[Sequence[str]] | None, cfg: BootstrapConfig
) -> list[list[str]]:
    """Each pair's captions plus ``cfg.synonym_wordings`` rewordings of them (taken in turn) with WordNet
    substitutions, drawn from ``(cfg.seed, pair, wording)``; a rewording that changed nothing is dropped."""
    thesaurus = load_thesaurus(cfg.wordnet_dir)
    out = []
    for k, (_, text) in enumerate(pairs):
        own = wordings(text, captions[k] if captions else ())
        extra = [
            thesaurus.substitute(own[j % len(own)], cfg.synonyms, random.Random(f"synonyms:{cfg.seed}:{k}:{j}"))
            for j in range(cfg.synonym_wordings)
        ]
        out.append(own[1:] + [t for t in extra if t not in own])
    return out


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch (Radford et al., 2021)."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    labels = torch.arange(len(img))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def train_heads(
    loaded,
    img_feats: torch.Tensor,
    txt_feats: torch.Tensor,
    cfg: BootstrapConfig,
    progress: Progress | None = None,
    counts: Sequence[int] | None = None,
    views: int = 1,
) -> dict:
    """Train copies of the heads on cached features, then load them into ``loaded.model``.

    ``counts[i]`` captions of image ``i`` follow each other in ``txt_feats`` when given (as
    :func:`cache_features` writes them with ``captions``); each epoch draws one of them per image.
    Without ``counts`` the features pair up row by row. ``img_feats`` holds ``views`` blocks of one
    row per image (block ``v``, row ``v * n + i``); each epoch draws one block per image.
    """
    torch.manual_seed(cfg.seed)
    image_head, text_head = (copy.deepcopy(h).float().cpu().train() for h in _heads(loaded.model))
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = [*image_head.parameters(), *text_head.parameters()]
    opt = torch.optim.AdamW(
        [
            {"params": params, "weight_decay": cfg.weight_decay},
            {"params": [logit_scale], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    if views < 1 or len(img_feats) % views:
        raise ValueError(f"{len(img_feats)} image features are not {views} blocks of one row per image")
    n = len(img_feats) // views
    sizes = torch.as_tensor(counts if counts is not None else [1] * n)
    if len(sizes) != n or int(sizes.sum()) != len(txt_feats) or bool((sizes < 1).any()):
        raise ValueError(f"{len(txt_feats)} text features do not match {n} images with caption counts {counts}")
    offsets = torch.cumsum(sizes, 0) - sizes
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, t0, loss = 0, time.perf_counter(), torch.tensor(float("nan"))
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        # Drawn only with counts: without them the generator (and so every run) is what it always was.
        rows = offsets + (torch.rand(n, generator=gen) * sizes).long() if counts is not None else offsets
        image_rows = torch.randint(views, (n,), generator=gen) * n + torch.arange(n) if views > 1 else torch.arange(n)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            loss = clip_loss(image_head(img_feats[image_rows[idx]]), text_head(txt_feats[rows[idx]]), logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        if progress:
            progress("train heads", step, total)
    live_image_head, live_text_head = _heads(loaded.model)
    live_image_head.load_state_dict(image_head.state_dict())
    live_text_head.load_state_dict(text_head.state_dict())
    with torch.no_grad():
        loaded.model.logit_scale.copy_(logit_scale.detach().clamp(max=math.log(100)))
    loaded.model.eval()
    return {
        "final_loss": float(loss.detach()),
        "steps": step,
        "pairs": n,
        "seconds": round(time.perf_counter() - t0, 2),
        "logit_scale": float(logit_scale.detach().exp()),
        "config": cfg.report(),
    }


def bootstrap_heads(
    loaded,
    pairs: Sequence[tuple[str, str]],
    cfg: BootstrapConfig | None = None,
    progress: Progress | None = None,
    captions: Sequence[Sequence[str]] | None = None,
) -> dict:
    """Cache tower features for ``pairs``, train the heads, and return a small report.

    ``captions`` (aligned with ``pairs``) adds more captions per image, one drawn per epoch.
    """
    cfg = cfg or BootstrapConfig()
    if cfg.synonym_wordings:
        captions = synonym_captions(pairs, captions, cfg)
    img, txt, keys = cache_features(loaded, pairs, cfg, progress, captions)
    counts = [len(wordings(pairs[k][1], captions[k])) for k in keys] if captions else None
    report = train_heads(loaded, img, txt, cfg, progress, counts, views=1 + cfg.image_views)
    report["skipped_images"] = len(pairs) - len(keys)
    if counts:
        report["captions"] = sum(counts)
    return report
