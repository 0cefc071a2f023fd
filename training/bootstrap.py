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

Tower features are cached on disk by image content, caption string, tower identity and view
(:mod:`training.features`): an ablation over head recipes encodes each image once, ever.

Rows of one concept are *siblings*: a ``groups`` key per pair (a manifest's concept column) or the
same caption. Plain CLIP pushes them apart as negatives; ``siblings="mask"`` leaves those pairs out
of the loss, ``"positive"`` counts shared groups as positives (:mod:`training.losses.siblings`).
When siblings share their caption (the emoji houses' drawings of one named concept) plain CLIP is
already multi-positive for them, and masking changes little (docs/findings.md, F28).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training import features
from training.bootstrap_siblings import (
    as_group_keys,
    batch_mask,
    clip_loss,
    draw_partners,
    image_alignment_loss,
    multi_positive_loss,
    sibling_keys,
    sibling_lists,
    text_identity,
    union,
)
from training.config import BootstrapConfig
from training.pairs import train_transform
from training.thesaurus import load_thesaurus

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


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


@dataclass
class CachedFeatures:
    """The heads' inputs for the readable pairs: ``img`` is ``views`` blocks of one row per kept pair,
    ``txt`` the wordings of each kept pair in turn (``counts[i]`` of pair i), ``texts`` those strings."""

    img: torch.Tensor
    txt: torch.Tensor
    keys: list[int]
    counts: list[int]
    texts: list[str]
    hashes: list[str]
    views: int
    cache: dict[str, int]


def cache_dir(cfg: BootstrapConfig) -> Path | None:
    if cfg.feature_cache == "auto":
        return features.default_cache_dir()
    return None if cfg.feature_cache in ("", "off") else Path(cfg.feature_cache).expanduser()


def tower_features(
    loaded,
    pairs: Sequence[tuple[str, str]],
    cfg: BootstrapConfig,
    progress: Progress | None = None,
    captions: Sequence[Sequence[str]] | None = None,
) -> CachedFeatures:
    """Pooled tower features of ``pairs`` (see :class:`CachedFeatures`), through the on-disk cache.

    Images are keyed by content, texts by string, both by the towers' identity and the view
    (:mod:`training.features`): a second run over the same images encodes nothing. Unreadable
    images are dropped (their pairs are not in ``keys``).
    """
    _heads(loaded.model)
    model = loaded.model.eval()
    root, ident = cache_dir(cfg), features.tower_identity(loaded, "image")
    hashes = features.hash_images([p for p, _ in pairs])
    clean_store = features.FeatureStore(root, ident, features.CLEAN)
    clean = features.image_features(
        loaded, [p for p, _ in pairs], hashes, clean_store, cfg.encode_batch_size, cfg.num_workers, progress
    )
    keys = [k for k, h in enumerate(hashes) if h is not None and h in clean]
    if not keys:
        raise ValueError("no readable training images")
    kept_hashes = [str(hashes[k]) for k in keys]
    blocks = [torch.stack([clean[h] for h in kept_hashes])]
    stores = [clean_store]
    if cfg.image_views:
        pp = model.visual.preprocess_cfg
        transform = train_transform(cfg.view_augment, loaded.image_size, pp["mean"], pp["std"])
        augment = cfg.view_augment.model_dump(mode="json")
        view_store = features.FeatureStore(root, ident, features.view_name(augment, cfg.seed, loaded.image_size))
        views = features.view_features(
            loaded, [pairs[k][0] for k in keys], kept_hashes, cfg.image_views, transform, cfg.seed, view_store,
            cfg.encode_batch_size, cfg.num_workers, progress,
        )  # fmt: skip
        stores.append(view_store)
        for v in range(cfg.image_views):  # an image that no longer decodes keeps its clean features
            blocks.append(torch.stack([views.get(f"{h}:{v}", clean[h]) for h in kept_hashes]))
    per_pair = [wordings(pairs[k][1], captions[k] if captions else ()) for k in keys]
    texts = [t for ws in per_pair for t in ws]
    text_store = features.FeatureStore(root, features.tower_identity(loaded, "text"), features.TEXT)
    txt = features.text_features(loaded, texts, text_store, cfg.encode_batch_size * 4, progress)
    stats = {
        "images_encoded": sum(s.misses for s in stores),
        "images_cached": sum(s.hits for s in stores),
        "texts_encoded": text_store.misses,
        "texts_cached": text_store.hits,
    }
    return CachedFeatures(
        torch.cat(blocks), txt, keys, [len(w) for w in per_pair], texts, kept_hashes, 1 + cfg.image_views, stats
    )


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
    each augmented view. :func:`tower_features` with the rest of what it knows.
    """
    out = tower_features(loaded, pairs, cfg, progress, captions)
    return out.img, out.txt, out.keys


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


def fit_heads(
    image_head: nn.Module,
    text_head: nn.Module,
    img_feats: torch.Tensor,
    txt_feats: torch.Tensor,
    cfg: BootstrapConfig,
    progress: Progress | None = None,
    counts: Sequence[int] | None = None,
    views: int = 1,
    groups: torch.Tensor | None = None,
    text_ids: torch.Tensor | None = None,
) -> tuple[dict, torch.Tensor]:
    """Train ``image_head`` and ``text_head`` in place on cached features; return a report and the log scale.

    ``groups`` (n,) or (n, G) integer keys per image (negative: none) say which images are of one
    concept; ``text_ids`` (one per text feature row) which captions are the same string. Under
    ``cfg.siblings == "mask"`` rows sharing a group key or the drawn caption are left out of each
    other's negatives; ``"positive"`` counts rows sharing a group key as positives (same caption
    still only masked); ``"negative"`` is plain CLIP.
    """
    torch.manual_seed(cfg.seed)
    opt, logit_scale, pair_loss = _optimiser(image_head, text_head, cfg)
    n, sizes = _check_inputs(img_feats, txt_feats, counts, views, text_ids)
    group_keys = as_group_keys(groups, n)
    partners = sibling_lists(group_keys) if cfg.image_align else None
    offsets = torch.cumsum(sizes, 0) - sizes
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, t0, loss = 0, time.perf_counter(), torch.tensor(float("nan"))
    with_siblings, rows_seen = 0, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        # Drawn only with counts: without them the generator (and so every run) is what it always was.
        rows = offsets + (torch.rand(n, generator=gen) * sizes).long() if counts is not None else offsets
        if counts is not None and cfg.name_share:  # drawn only when set: other runs keep their generator
            rows = torch.where(torch.rand(n, generator=gen) < cfg.name_share, offsets, rows)
        image_rows = torch.randint(views, (n,), generator=gen) * n + torch.arange(n) if views > 1 else torch.arange(n)
        partner = draw_partners(partners, image_rows, n, views, gen) if partners is not None else None
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            concept = batch_mask(group_keys, idx)
            caption = batch_mask(text_ids[rows[idx]].view(-1, 1), None) if text_ids is not None else None
            either = union(concept, caption)
            if either is not None:
                with_siblings += int(either.any(1).sum())
            rows_seen += len(idx)
            img_in = img_feats[image_rows[idx]]
            if cfg.feature_dropout:
                img_in = F.dropout(img_in, cfg.feature_dropout, training=True)
            img_emb = image_head(img_in)
            txt_emb = text_head(txt_feats[rows[idx]])
            if cfg.siblings == "positive" and concept is not None:
                masked = caption if caption is not None else torch.zeros_like(concept)
                loss = multi_positive_loss(img_emb, txt_emb, logit_scale, concept, masked)
            elif pair_loss is None:
                loss = clip_loss(img_emb, txt_emb, logit_scale, either if cfg.siblings != "negative" else None)
            else:
                mask = either if cfg.siblings != "negative" else None
                scale = {} if cfg.loss == "siglip" else {"logit_scale": logit_scale.exp()}
                loss = pair_loss(img_emb, txt_emb, siblings=mask, **scale)["contrastive_loss"]
            if cfg.caption_weight and counts is not None:
                names = text_head(txt_feats[offsets[idx]])
                name_mask = union(concept, batch_mask(text_ids[offsets[idx]].view(-1, 1), None)
                                if text_ids is not None else None)  # fmt: skip
                name_loss = clip_loss(img_emb, names, logit_scale, name_mask if cfg.siblings != "negative" else None)
                loss = name_loss + cfg.caption_weight * loss
            if partner is not None:
                has = partner[idx] >= 0
                if int(has.sum()) >= 2:
                    sub = idx[has]
                    sub_mask = batch_mask(group_keys, sub)
                    partner_emb = image_head(img_feats[partner[sub]])
                    align = image_alignment_loss(img_emb[has], partner_emb, logit_scale, sub_mask)
                    loss = loss + cfg.image_align * align
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        if progress:
            progress("train heads", step, total)
    report = {
        "final_loss": float(loss.detach()),
        "steps": step,
        "pairs": n,
        "seconds": round(time.perf_counter() - t0, 2),
        "logit_scale": float(logit_scale.detach().exp()),
        "rows_with_a_sibling_in_batch": round(with_siblings / max(1, rows_seen), 4),
        "config": cfg.report(),
    }
    return report, logit_scale.detach()


def _optimiser(image_head: nn.Module, text_head: nn.Module, cfg: BootstrapConfig):
    """``(AdamW over what trains, the log logit scale, the library pair loss or None)``; heads in float32 on the CPU."""
    image_head.float().cpu().train()
    text_head.float().cpu().train()
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)), requires_grad=cfg.learn_temperature)
    if cfg.text_head_frozen:
        text_head.requires_grad_(False)
    params = [p for h in (image_head, text_head) for p in h.parameters() if p.requires_grad]
    groups_list: list[dict] = [{"params": params, "weight_decay": cfg.weight_decay}]
    if cfg.learn_temperature:
        groups_list.append({"params": [logit_scale], "weight_decay": 0.0})
    pair_loss = _pair_loss(cfg)
    if cfg.loss == "siglip" and pair_loss is not None:
        groups_list.append({"params": list(pair_loss.parameters()), "weight_decay": 0.0})
    return torch.optim.AdamW(groups_list, lr=cfg.lr), logit_scale, pair_loss


def _check_inputs(img_feats, txt_feats, counts, views: int, text_ids) -> tuple[int, torch.Tensor]:
    """``(images n, captions per image)``, or a ValueError naming what does not line up."""
    if views < 1 or len(img_feats) % views:
        raise ValueError(f"{len(img_feats)} image features are not {views} blocks of one row per image")
    n = len(img_feats) // views
    sizes = torch.as_tensor(counts if counts is not None else [1] * n)
    if len(sizes) != n or int(sizes.sum()) != len(txt_feats) or bool((sizes < 1).any()):
        raise ValueError(f"{len(txt_feats)} text features do not match {n} images with caption counts {counts}")
    if text_ids is not None and len(text_ids) != len(txt_feats):
        raise ValueError(f"text_ids needs one id per text feature ({len(txt_feats)}), got {len(text_ids)}")
    return n, sizes


def _pair_loss(cfg: BootstrapConfig) -> nn.Module | None:
    """The library loss a non-default ``cfg.loss`` / ``cfg.hard_beta`` asks for (None: :func:`clip_loss`)."""
    from training.losses import HardNegativeClipLoss, SigLipLoss

    if cfg.loss == "siglip":
        return SigLipLoss.for_batch_size(cfg.batch_size)
    if cfg.hard_beta:
        return HardNegativeClipLoss(beta=cfg.hard_beta, tau_plus=0.0, learnable=False)
    return None


def train_heads(
    loaded,
    img_feats: torch.Tensor,
    txt_feats: torch.Tensor,
    cfg: BootstrapConfig,
    progress: Progress | None = None,
    counts: Sequence[int] | None = None,
    views: int = 1,
    groups: torch.Tensor | None = None,
    text_ids: torch.Tensor | None = None,
) -> dict:
    """Train copies of the heads on cached features, then load them into ``loaded.model``.

    ``counts[i]`` captions of image ``i`` follow each other in ``txt_feats`` when given (as
    :func:`cache_features` writes them with ``captions``); each epoch draws one of them per image.
    Without ``counts`` the features pair up row by row. ``img_feats`` holds ``views`` blocks of one
    row per image (block ``v``, row ``v * n + i``); each epoch draws one block per image.
    ``groups`` and ``text_ids`` say which rows are siblings (:func:`fit_heads`).
    """
    image_head, text_head = (copy.deepcopy(h) for h in _heads(loaded.model))
    report, logit_scale = fit_heads(
        image_head, text_head, img_feats, txt_feats, cfg, progress, counts, views, groups, text_ids
    )
    live_image_head, live_text_head = _heads(loaded.model)
    live_image_head.load_state_dict(image_head.state_dict())
    live_text_head.load_state_dict(text_head.state_dict())
    with torch.no_grad():
        loaded.model.logit_scale.copy_(logit_scale.clamp(max=math.log(100)))
    loaded.model.eval()
    return report


def bootstrap_heads(
    loaded,
    pairs: Sequence[tuple[str, str]],
    cfg: BootstrapConfig | None = None,
    progress: Progress | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    groups: Sequence[str | None] | None = None,
) -> dict:
    """Cache tower features for ``pairs``, train the heads, and return a small report.

    ``captions`` (aligned with ``pairs``) adds more captions per image, one drawn per epoch.
    ``groups`` (aligned with ``pairs``; e.g. a manifest's concept column) names the concept of each
    pair: rows of one group, or with the same caption, are siblings (``cfg.siblings``).
    """
    cfg = cfg or BootstrapConfig()
    if cfg.synonym_wordings:
        captions = synonym_captions(pairs, captions, cfg)
    feats = tower_features(loaded, pairs, cfg, progress, captions)
    keys = sibling_keys(pairs, feats.keys, groups)
    report = train_heads(
        loaded,
        feats.img,
        feats.txt,
        cfg,
        progress,
        feats.counts if captions else None,
        views=feats.views,
        groups=keys,
        text_ids=text_identity(feats.texts),
    )
    report["skipped_images"] = len(pairs) - len(feats.keys)
    report["feature_cache"] = feats.cache
    if captions:
        report["captions"] = sum(feats.counts)
    return report
