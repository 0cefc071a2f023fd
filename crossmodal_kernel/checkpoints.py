"""Writing weights: our checkpoint format and exported model folders (read back by ``loading``).

A checkpoint is ``{"spec": base spec, "state_dict": ...}``; load it with the spec
``f"{base}@{path}"`` (:meth:`ModelSpec.with_checkpoint`). An exported folder
(``local-dir:``) holds a config naming the base spec and the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from crossmodal_kernel import atomic
from crossmodal_kernel.loading import EXPORT_CONFIG, EXPORT_WEIGHTS, LoadedModel
from crossmodal_kernel.specs import parse_spec


def save_checkpoint(loaded: LoadedModel, path: str | Path, **extra) -> Path:
    """Write {"spec": base spec, "state_dict": ...} atomically."""
    reserved = {"spec", "state_dict"} & extra.keys()
    if reserved:
        raise ValueError(f"{sorted(reserved)} are written by save_checkpoint itself")
    payload = {"spec": base_spec(loaded), "state_dict": loaded.model.state_dict(), **extra}
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def export_model(loaded: LoadedModel, out_dir: str | Path) -> Path:
    """Write a self-describing folder (config naming the base spec + weights) for ``local-dir:``.

    The folder is assembled under a temporary name and renamed into place, so a
    reader never sees half of it; an existing non-empty ``out_dir`` is refused.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"export target {out} already exists and is not an empty folder")
    if out.is_dir():
        out.rmdir()  # empty: atomic_dir renames onto a free name
    with atomic.atomic_dir(out) as tmp:
        torch.save(loaded.model.state_dict(), tmp / EXPORT_WEIGHTS)
        config = {
            "format": "crossmodal-model",
            "version": 1,
            "base_spec": base_spec(loaded),
            "weights": EXPORT_WEIGHTS,
            "embed_dim": loaded.embed_dim,
            "image_size": loaded.image_size,
            "preprocess_cfg": dict(loaded.model.visual.preprocess_cfg),
        }
        (tmp / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out


def base_spec(loaded: LoadedModel) -> str:
    """The spec a checkpoint of ``loaded`` is loaded on top of (the spec without its weights)."""
    spec = parse_spec(loaded.spec)
    if spec.kind == "local-dir":
        config = Path(spec.name) / EXPORT_CONFIG
        if config.is_file():
            return str(json.loads(config.read_text())["base_spec"])
        return str(spec)
    return str(spec.with_checkpoint(None))
