"""Frozen-tower features on disk: an ablation that trains only the heads never re-encodes an image.

A LiT bootstrap trains projection heads on the towers' pooled features (the heads' inputs). Those
features depend on three things only, and the cache key names all three:

- the **input**: an image file's bytes (SHA-256 of its content, so a renamed or copied file hits and
  an edited one misses) or a caption's exact string;
- the **tower**: :func:`tower_identity`, a hash of the model's base spec and every weight of the
  tower that feeds the head (with the preprocessing, for images); the heads themselves are left
  out: training them changes no feature, while a fine-tune that unlocks a tower layer does, and
  then that tower's features miss;
- the **view**: ``clean`` (the model's evaluation preprocessing) or an augmented view, named by the
  augmentation policy, its seed and the view's number (:func:`view_name`), drawn from a generator
  seeded by ``(seed, content hash, view)``, so a view is a pure function of its key.

Layout: ``<root>/<tower identity>/<view>/shard-<random>.npz`` (view ``text`` for captions), each
shard holding ``keys`` and ``features`` (float32). A run adds one shard with the features it had
to compute; each shard is written under a temporary name and renamed
(:mod:`crossmodal_kernel.atomic`), so concurrent runs never see half a file and at worst both
encode the same rows once. The default root is ``$CROSSMODAL_FEATURE_CACHE`` or
``~/.cache/crossmodal/features`` (``off`` disables caching).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crossmodal_kernel import atomic
from crossmodal_kernel.encoder import trim_padding
from crossmodal_kernel.images import ImageFiles, collate_images, loader_workers, open_image, worker_context
from training.pairs import seeded_cpu_rng

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)

CACHE_ENV = "CROSSMODAL_FEATURE_CACHE"
CLEAN = "clean"
TEXT = "text"


def default_cache_dir() -> Path | None:
    """``$CROSSMODAL_FEATURE_CACHE`` (``off`` or empty: no cache), else ``~/.cache/crossmodal/features``."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "none", "0") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "crossmodal" / "features"


def content_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex, 32 characters): the image's identity, whatever its name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _heads(model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    image_head = getattr(model.visual, "head", None)
    text_head = getattr(getattr(model, "text", None), "proj", None)
    return image_head, text_head


def tower_identity(loaded, tower: str = "image") -> str:
    """A hash of what one head's inputs depend on: the base spec and that tower's weights (``image``:
    the ``visual.`` weights and the preprocessing; ``text``: every other weight).

    Head weights, ``logit_scale`` and ``logit_bias`` are left out, so a bootstrapped checkpoint shares
    its base model's features, while any change to a tower weight gives that tower another identity.
    """
    from crossmodal_kernel.specs import parse_spec

    if tower not in ("image", "text"):
        raise ValueError(f"tower must be image or text, got {tower!r}")
    model = loaded.model
    skip = {id(t) for head in _heads(model) if head is not None for t in head.state_dict(keep_vars=True).values()}
    h = hashlib.sha256()
    h.update(f"{tower}:{parse_spec(loaded.spec).with_checkpoint(None)}".encode())
    if tower == "image":
        h.update(json.dumps(dict(getattr(model.visual, "preprocess_cfg", {})), sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict(keep_vars=True).items():
        other_tower = name.startswith("visual.") != (tower == "image")
        if id(tensor) in skip or name in ("logit_scale", "logit_bias") or other_tower:
            continue
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:24]


def view_name(augment: dict, seed: int, image_size: int) -> str:
    """The folder of one augmentation policy's views (view numbers are part of each key)."""
    blob = json.dumps({"augment": augment, "seed": seed, "size": image_size}, sort_keys=True, default=str)
    return "views-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


class FeatureStore:
    """Features of one tower identity and one view, read from and added to ``<root>/<identity>/<view>``.

    ``None`` as root is a store that remembers nothing (every lookup misses, nothing is written).
    ``hits`` and ``misses`` count lookups, so callers can report what a run had to encode.
    """

    def __init__(self, root: Path | None, identity: str, view: str):
        self.dir = None if root is None else Path(root) / identity / view
        self._table: dict[str, np.ndarray] | None = None
        self.hits = self.misses = 0

    def _load(self) -> dict[str, np.ndarray]:
        if self._table is None:
            self._table = {}
            if self.dir is not None and self.dir.is_dir():
                for shard in sorted(self.dir.glob("shard-*.npz")):
                    try:
                        with np.load(shard, allow_pickle=False) as z:
                            self._table.update(zip(z["keys"].tolist(), z["features"], strict=True))
                    except (OSError, ValueError, KeyError) as e:  # a damaged shard is only a cache miss
                        log.warning("ignoring unreadable feature shard %s: %s", shard, e)
        return self._table

    def lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        table = self._load()
        found = {k: table[k] for k in keys if k in table}
        self.hits += len(found)
        self.misses += len(set(keys) - found.keys())
        return found

    def add(self, keys: Sequence[str], features: np.ndarray) -> None:
        """Remember ``features`` (one row per key) and write them as one new shard."""
        if not len(keys):
            return
        features = np.ascontiguousarray(features, dtype=np.float32)
        self._load().update(zip(keys, features, strict=True))
        if self.dir is None:
            return
        path = self.dir / f"shard-{uuid.uuid4().hex[:16]}.npz"
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.asarray(list(keys), dtype=str), features=features)


class _Capture:
    """Forward pre-hook that records the input of a head: the frozen pooled features."""

    def __init__(self, module: nn.Module):
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args):
        self.value = args[0].detach().float().cpu()


def _head_or_fail(loaded) -> tuple[nn.Module, nn.Module]:
    image_head, text_head = _heads(loaded.model)
    if not isinstance(image_head, nn.Module) or not isinstance(text_head, nn.Module):
        raise TypeError(
            "cached tower features need a model with module projection heads "
            "(open_clip timm image tower + HF text tower, e.g. builtin:lit-mini)"
        )
    return image_head, text_head


def hash_images(paths: Sequence[str]) -> list[str | None]:
    """Each path's :func:`content_hash`, or ``None`` for a file that cannot be read."""
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(content_hash(p))
        except OSError as e:
            log.warning("skipping unreadable image %s: %s", p, e)
            out.append(None)
    return out


@torch.inference_mode()
def image_features(
    loaded,
    paths: Sequence[str],
    hashes: Sequence[str | None],
    store: FeatureStore,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """Clean-view pooled features by content hash, for every image that decodes; cached ones are not encoded."""
    wanted = {h: p for p, h in zip(paths, hashes, strict=True) if h is not None}
    found = store.lookup(list(wanted))
    todo = [(h, p) for h, p in wanted.items() if h not in found]
    if todo:
        image_head, _ = _head_or_fail(loaded)
        cap = _Capture(image_head)
        try:
            loader = DataLoader(
                ImageFiles(list(enumerate(p for _, p in todo)), loaded.preprocess),
                batch_size=batch_size,
                num_workers=(workers := loader_workers(num_workers)),
                collate_fn=collate_images,
                multiprocessing_context=worker_context(workers),
            )
            done = 0
            for ks, tensors, bad in loader:
                for k, err in bad.items():
                    log.warning("skipping unreadable image %s: %s", todo[k][1], err)
                if tensors is not None:
                    loaded.model.encode_image(tensors.to(loaded.device))
                    assert cap.value is not None
                    new_keys = [todo[int(k)][0] for k in ks]
                    store.add(new_keys, cap.value.numpy())
                    found.update(zip(new_keys, cap.value.numpy(), strict=True))
                done += len(ks) + len(bad)
                if progress:
                    progress("encode images", done, len(todo))
        finally:
            cap.handle.remove()
    return {h: torch.from_numpy(np.asarray(v)) for h, v in found.items()}


class _ViewImages(Dataset):
    """``(i, the views of image i stacked | None)``; view ``v`` drawn from ``(seed, content hash, v)``."""

    def __init__(self, items: Sequence[tuple[str, str, list[int]]], transform: Callable, seed: int):
        self.items, self.transform, self.seed = items, transform, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        digest, path, views = self.items[i]
        try:
            image = open_image(path)
        except Exception:  # noqa: BLE001 - an image that no longer decodes keeps its clean features
            return i, None
        out = []
        for v in views:
            gen_seed = int(hashlib.sha256(f"{self.seed}:{digest}:{v}".encode()).hexdigest()[:15], 16)
            with seeded_cpu_rng(gen_seed):
                out.append(self.transform(image))
        return i, torch.stack(out)


def _collate_views(batch):
    ok = [(i, t) for i, t in batch if t is not None]
    return [i for i, _ in ok], [t for _, t in ok], [i for i, t in batch if t is None]


@torch.inference_mode()
def view_features(
    loaded,
    paths: Sequence[str],
    hashes: Sequence[str],
    views: int,
    transform: Callable,
    seed: int,
    store: FeatureStore,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """Features of ``views`` augmented views of each image, keyed ``"<content hash>:<view>"``."""
    keys = {f"{h}:{v}": (h, p, v) for p, h in zip(paths, hashes, strict=True) for v in range(views)}
    found = store.lookup(list(keys))
    todo: dict[str, tuple[str, list[int]]] = {}
    for key, (h, p, v) in keys.items():
        if key not in found:
            todo.setdefault(h, (p, []))[1].append(v)
    if todo:
        image_head, _ = _head_or_fail(loaded)
        cap = _Capture(image_head)
        items = [(h, p, vs) for h, (p, vs) in todo.items()]
        try:
            loader = DataLoader(
                _ViewImages(items, transform, seed),
                batch_size=max(1, batch_size // max(1, views)),
                num_workers=(workers := loader_workers(num_workers)),
                collate_fn=_collate_views,
                multiprocessing_context=worker_context(workers),
            )
            done = 0
            for idx, tensors, bad in loader:
                for i in bad:
                    log.warning("image %s no longer decodes; its augmented views are left out", items[i][1])
                if tensors:
                    loaded.model.encode_image(torch.cat(tensors).to(loaded.device))
                    assert cap.value is not None
                    new_keys = [f"{items[i][0]}:{v}" for i in idx for v in items[i][2]]
                    store.add(new_keys, cap.value.numpy())
                    found.update(zip(new_keys, cap.value.numpy(), strict=True))
                done += len(idx) + len(bad)
                if progress:
                    progress("encode image views", done, len(items))
        finally:
            cap.handle.remove()
    return {k: torch.from_numpy(np.asarray(v)) for k, v in found.items()}


@torch.inference_mode()
def text_features(
    loaded,
    texts: Sequence[str],
    store: FeatureStore,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Pooled text-tower features, one row per text (each distinct string encoded at most once)."""
    distinct = list(dict.fromkeys(texts))
    keys = [text_key(t) for t in distinct]
    found = store.lookup(keys)
    todo = [(k, t) for k, t in zip(keys, distinct, strict=True) if k not in found]
    if todo:
        _, text_head = _head_or_fail(loaded)
        cap = _Capture(text_head)
        try:
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                tokens = trim_padding(loaded.model, loaded.tokenizer([t for _, t in chunk]))
                loaded.model.encode_text(tokens.to(loaded.device))
                assert cap.value is not None
                store.add([k for k, _ in chunk], cap.value.numpy())
                found.update(zip([k for k, _ in chunk], cap.value.numpy(), strict=True))
                if progress:
                    progress("encode texts", min(start + batch_size, len(todo)), len(todo))
        finally:
            cap.handle.remove()
    if not texts:
        return torch.zeros(0)
    return torch.from_numpy(np.stack([found[text_key(t)] for t in texts]).astype(np.float32))
