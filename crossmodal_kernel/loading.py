"""One factory from a model spec string to a ready-to-use open_clip model (:func:`load_model`)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.timm_model import TimmModel
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

from crossmodal_kernel import builtin
from crossmodal_kernel.hub import fetch_pretrained, network_errors_as_download_errors
from crossmodal_kernel.specs import ModelSpec, parse_spec

EXPORT_CONFIG = "crossmodal_model.json"
EXPORT_WEIGHTS = "weights.pt"


@dataclass
class LoadedModel:
    model: Any  # open_clip CLIP / CustomTextCLIP (untyped), in eval mode, on `device`
    preprocess: Callable  # eval transform: PIL.Image -> float tensor (3,H,W)
    train_preprocess: Callable  # train transform (open_clip's)
    tokenizer: Callable  # list[str] -> LongTensor (n, context_length)
    spec: str  # the spec string it was loaded from
    embed_dim: int
    image_size: int
    device: torch.device


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available (use 'auto' or 'cpu')")
    return device


def load_model(spec: str, device: str | torch.device | None = "auto") -> LoadedModel:
    """Build the model a spec names, in eval mode on ``device``, with its transforms and tokenizer.

    Raises ValueError (bad spec, unknown arch/tag, checkpoint of another base),
    FileNotFoundError (missing checkpoint or folder) or ModelDownloadError.
    """
    parsed = parse_spec(spec)
    target = resolve_device(device)
    if parsed.kind == "local-dir":
        model, tokenizer = build_local_dir(Path(parsed.name))
    else:
        # The checkpoint is read first, so a wrong path or base fails before the slow build;
        # and since it overwrites the base weights, those are not fetched at all.
        apply_checkpoint = read_checkpoint(parsed) if parsed.checkpoint else None
        model, tokenizer = build_base(parsed, with_weights=apply_checkpoint is None)
        if apply_checkpoint is not None:
            apply_checkpoint(model)
    model.to(target).eval()
    if isinstance(model.visual, TimmModel):
        # Convolutional towers run ~1.5x faster channels-last on CPU (oneDNN) and on CUDA.
        model.visual.to(memory_format=torch.channels_last)
    pp = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), model.visual.preprocess_cfg))
    size = pp.size if isinstance(pp.size, int) else pp.size[0]
    return LoadedModel(
        model=model,
        preprocess=image_transform_v2(pp, is_train=False),
        train_preprocess=image_transform_v2(pp, is_train=True),
        tokenizer=tokenizer,
        spec=spec,
        embed_dim=_embed_dim(model),
        image_size=int(size),
        device=target,
    )


def build_base(spec: ModelSpec, with_weights: bool) -> tuple[Any, Callable]:
    """The architecture a spec names (its pretrained weights only ``with_weights``)."""
    if spec.kind == "builtin":
        pyramid = builtin.SPP_LEVELS if spec.name == "lit-mini-spp" else None
        return builtin.build_lit_mini(pretrained=with_weights, pyramid=pyramid)
    if spec.kind == "test":
        return builtin.build_tiny()
    return _build_open_clip(spec, with_weights)


def _build_open_clip(spec: ModelSpec, with_weights: bool) -> tuple[Any, Callable]:
    arch, tag = spec.name, spec.pretrained
    models = open_clip.list_models()
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=5) or models[:8]
        raise ValueError(f"unknown open_clip architecture {arch!r}; for example: {', '.join(close)}")
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if tag and not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"unknown pretrained tag {tag!r} for {arch}; available: {', '.join(tags) or 'none'}")
    weights = fetch_pretrained(str(spec), tag_cfg) if (tag and with_weights) else None
    with network_errors_as_download_errors(str(spec)):
        model = open_clip.create_model(
            arch,
            pretrained=weights,
            # Tag metadata is local: its preprocessing and activation apply without a download.
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            force_preprocess_cfg=merge_preprocess_dict({}, tag_cfg),
            pretrained_text=False,  # never pull a text tower's base weights on the side
        )
        tokenizer = open_clip.get_tokenizer(arch)
    return model, tokenizer


def build_local_dir(path: Path) -> tuple[Any, Callable]:
    """A model folder: ours (``export_model``) or open_clip's hf-hub layout."""
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    ours = path / EXPORT_CONFIG
    if ours.is_file():
        config = json.loads(ours.read_text())
        base = parse_spec(config["base_spec"])
        if base.kind == "local-dir":
            model, tokenizer = build_local_dir(Path(base.name))
        else:
            model, tokenizer = build_base(base, with_weights=False)
        state_dict = torch.load(path / config["weights"], map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict, strict=True)
        open_clip.set_model_preprocess_cfg(model, preprocess_from_json(config["preprocess_cfg"]))
        return model, tokenizer
    if (path / "open_clip_config.json").is_file():
        if not any(any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth")):
            # open_clip would quietly hand back a random model.
            raise FileNotFoundError(f"{path} has open_clip_config.json but no weights (.safetensors/.bin/.pth)")
        with network_errors_as_download_errors(f"local-dir:{path}"):
            model = open_clip.create_model(f"local-dir:{path}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        return model, tokenizer
    raise FileNotFoundError(
        f"{path} is not a model folder: expected {EXPORT_CONFIG} (from export_model) or open_clip_config.json"
    )


def read_checkpoint(spec: ModelSpec) -> Callable[[torch.nn.Module], None]:
    """Check ``spec.checkpoint`` and return the function that loads it (strictly) into the base."""
    if spec.checkpoint is None:
        raise ValueError(f"{spec} names no checkpoint")
    path = Path(spec.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if spec.kind == "open_clip":
        if path.suffix not in (".safetensors", ".npz", ".npy"):
            _check_saved_spec(torch.load(path, map_location="cpu", weights_only=True, mmap=True), spec, path)
        # open_clip's loader takes its own and foreign formats ("module." prefixes, old layouts).
        return lambda model: open_clip.load_checkpoint(model, str(path), strict=True)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    _check_saved_spec(checkpoint, spec, path)
    state_dict = checkpoint.get("state_dict", checkpoint)
    if next(iter(state_dict), "").startswith("module."):  # saved from DistributedDataParallel
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    return lambda model: model.load_state_dict(state_dict, strict=True)


def _check_saved_spec(checkpoint: object, spec: ModelSpec, path: Path) -> None:
    """A checkpoint of ours names its base; refuse it on top of another architecture."""
    saved = checkpoint.get("spec") if isinstance(checkpoint, dict) else None
    if isinstance(saved, str):
        base = parse_spec(saved)
        if (base.kind, base.name) != (spec.kind, spec.name):
            raise ValueError(f"checkpoint {path} was saved from {saved}, not {spec.kind}:{spec.name}")


def preprocess_from_json(cfg: dict) -> dict:
    """JSON turns tuples into lists; PreprocessCfg expects tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in merge_preprocess_dict({}, cfg).items()}


def _embed_dim(model: Any) -> int:
    for module in (model.visual, getattr(model, "text", None)):
        dim = getattr(module, "output_dim", None)
        if isinstance(dim, int):
            return dim
    projection = getattr(model, "text_projection", None)
    if projection is not None:
        return int(projection.shape[-1] if isinstance(projection, torch.Tensor) else projection.out_features)
    raise TypeError(f"cannot tell the embedding size of {type(model).__name__}")
