"""Exporting a loaded model's two towers to ONNX, checked against PyTorch, cached beside its weights.

Each tower is exported whole, normalisation included: ``pixels (n, 3, H, W) float32`` and
``tokens (n, L) int64`` in, ``embedding (n, d) float32`` unit rows out. The batch axis is
dynamic; so is the text length for Hugging Face text towers, which mask their padding (the
encoder trims the all-padding tail, as it does for PyTorch). open_clip's own text transformer
uses a causal mask of the full context length, so its token axis stays the tokenizer's
context length, which is what its tokenizer always gives.

A graph is published only once ONNX Runtime reproduces PyTorch on probe inputs (several batch
sizes, both text lengths): cosine >= :data:`MIN_COSINE` per row. Graphs are cached in a folder
keyed by the model version (the spec and its checkpoint file's size and time) and the versions
of torch, open_clip and onnxruntime, written with :func:`crossmodal_kernel.atomic.atomic_dir`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.hf_model import HFTextEncoder
from torch import nn

from crossmodal_kernel import atomic
from crossmodal_kernel.loading import LoadedModel
from crossmodal_kernel.specs import parse_spec

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the exported graphs change meaning: old caches are then ignored
OPSET = 17
MIN_COSINE = 0.9999
TOWERS = ("text", "image")
META = "meta.json"


class ExportError(RuntimeError):
    """A tower could not be exported, or its graph does not reproduce PyTorch."""


class ImageTower(nn.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixels, normalize=False).float(), dim=-1)


class TextTower(nn.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens, normalize=False).float(), dim=-1)


def dynamic_text_length(model: Any) -> bool:
    """Whether the text tower takes any token count (HF towers mask padding; CLIP's needs its context)."""
    return isinstance(getattr(model, "text", None), HFTextEncoder)


def ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def graph_key(spec: str) -> str:
    """The cache key of ``spec``'s graphs: its weights' identity and every version that shapes a graph."""
    import open_clip

    parsed = parse_spec(spec)
    weights = (
        Path(parsed.checkpoint) if parsed.checkpoint else (Path(parsed.name) if parsed.kind == "local-dir" else None)
    )
    stamp = ""
    if weights is not None and weights.exists():
        files = [weights] if weights.is_file() else sorted(p for p in weights.rglob("*") if p.is_file())
        stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    text = f"{FORMAT}|{spec}|{stamp}|torch {torch.__version__}|open_clip {open_clip.__version__}"
    return f"ort{ort_version()}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def cache_dir(spec: str, fallback_root: Path) -> Path:
    """Where ``spec``'s graphs live: beside its checkpoint (``<dir>/onnx/<key>``), else under ``fallback_root``.

    Specs without a checkpoint of ours (``builtin:lit-mini``, ``test:tiny``, open_clip tags, model
    folders that may be read-only), and checkpoints in a folder this process may not write, share
    ``fallback_root`` (the data dir's ``onnx/``).
    """
    parsed = parse_spec(spec)
    key = graph_key(spec)
    beside = Path(parsed.checkpoint).resolve().parent if parsed.checkpoint else None
    if beside is not None and os.access(beside, os.W_OK):
        return beside / "onnx" / key
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{parsed.kind}-{parsed.name}")[-60:]
    return Path(fallback_root) / f"{slug}-{key}"


@dataclass(frozen=True)
class Graphs:
    folder: Path
    meta: dict

    def path(self, tower: str) -> Path:
        return self.folder / self.meta["files"][tower]


_PUBLISHED: dict[str, Path] = {}  # folder name (its key) -> a folder this process published it in


def cached_or_export(loaded: LoadedModel, folder: Path) -> Graphs:
    """The graphs in ``folder``, exporting (and checking) them first when they are not there yet.

    Graphs this process already published under the same key elsewhere (another data dir) are
    copied rather than exported again.
    """
    found = read_graphs(folder)
    if found is not None:
        return found
    twin = _PUBLISHED.get(folder.name)
    twin_graphs = read_graphs(twin) if twin is not None else None
    try:
        with atomic.atomic_dir(folder) as tmp:
            if twin_graphs is not None:
                for name in (*twin_graphs.meta["files"].values(), META):
                    shutil.copyfile(twin_graphs.folder / name, tmp / name)
            else:
                export_towers(loaded, tmp)
    except FileExistsError:  # another process published it first: theirs is as good as ours
        pass
    found = read_graphs(folder)
    if found is None:
        raise ExportError(f"{folder} holds no complete export")
    _PUBLISHED[folder.name] = folder
    return found


def read_graphs(folder: Path) -> Graphs | None:
    meta_path = folder / META
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or not all((folder / meta["files"][t]).is_file() for t in TOWERS):
        return None
    return Graphs(folder, meta)


def export_towers(loaded: LoadedModel, out: Path) -> dict:
    """Export both towers of ``loaded`` (from a CPU copy) into ``out``, check them, write ``meta.json``."""
    model = loaded.model if loaded.device.type == "cpu" else copy.deepcopy(loaded.model).to("cpu").float()
    loaded = dataclasses.replace(loaded, model=model, device=torch.device("cpu"))
    dynamic = dynamic_text_length(model)
    pixels, tokens = probe_inputs(loaded)
    with torch.inference_mode(False), torch.no_grad(), _quiet_export():
        export_one(ImageTower(model), pixels[:2], out / "image.onnx", "pixels", {0: "batch"})
        axes = {0: "batch", 1: "tokens"} if dynamic else {0: "batch"}
        export_one(TextTower(model), tokens[:2], out / "text.onnx", "tokens", axes)
    worst = check_graphs(loaded, out / "image.onnx", out / "text.onnx", pixels, tokens)
    meta = {
        "format": FORMAT,
        "spec": loaded.spec,
        "files": {"text": "text.onnx", "image": "image.onnx"},
        "embed_dim": loaded.embed_dim,
        "image_size": loaded.image_size,
        "dynamic_text_length": dynamic,
        "context_length": int(tokens.shape[1]),
        "onnxruntime": ort_version(),
        "torch": torch.__version__,
        "opset": OPSET,
        "min_cosine": worst,
    }
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def export_one(module: nn.Module, example: torch.Tensor, path: Path, name: str, axes: dict[int, str]) -> None:
    try:
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[name],
            output_names=["embedding"],
            dynamic_axes={name: axes, "embedding": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    except Exception as e:
        raise ExportError(f"exporting the {path.stem} tower failed: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The exporter warns about every traced Python branch; the check below is what decides.

    ``nn.MultiheadAttention``'s inference fast path (open_clip's towers) is a fused operator with
    no ONNX form: the export traces the plain path, which computes the same.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def probe_inputs(loaded: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed images and texts for exporting and checking: odd sizes, empty-ish, long, non-Latin."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(37, 53), (300, 120), (1, 1), (224, 224), (640, 480)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    pixels = torch.stack([loaded.preprocess(im) for im in images])
    tokens = loaded.tokenizer(PROBE_TEXTS)
    return pixels, tokens


PROBE_TEXTS = [
    "a red circle above a small blue square",
    "",
    " ",
    "猫がテーブルの上で寝ている",
    "кошка спит на столе",
    "🙂🎂🌧",
    "a very long caption that keeps going " * 30,
]


def check_graphs(loaded: LoadedModel, image: Path, text: Path, pixels: torch.Tensor, tokens: torch.Tensor) -> float:
    """The lowest row cosine between ONNX Runtime and PyTorch over probe batches; ExportError below the bar."""
    from crossmodal_kernel.encoder import trim_padding

    sessions = {"image": cpu_session(image), "text": cpu_session(text)}
    towers = {"image": ImageTower(loaded.model), "text": TextTower(loaded.model)}
    trimmed = trim_padding(loaded.model, tokens) if dynamic_text_length(loaded.model) else tokens
    batches = {
        "image": [pixels, pixels[:1], pixels[3:4]],
        "text": [tokens, trimmed, tokens[:1], trim_padding(loaded.model, tokens[:1]), tokens[1:3]],
    }
    worst = 1.0
    for tower, inputs in batches.items():
        name = sessions[tower].get_inputs()[0].name
        for batch in inputs:
            if tower == "text" and dynamic_text_length(loaded.model):
                batch = trim_padding(loaded.model, batch)
            with torch.no_grad():
                want = towers[tower](batch).numpy()
            got = sessions[tower].run(None, {name: batch.numpy()})[0]
            cosine = float(np.min(np.sum(want * got, axis=1) / np.linalg.norm(got, axis=1)))
            worst = min(worst, cosine)
            if not cosine >= MIN_COSINE:
                raise ExportError(
                    f"the ONNX {tower} tower differs from PyTorch (cosine {cosine:.6f} < {MIN_COSINE} "
                    f"on a batch of {len(batch)})"
                )
    return worst


def cpu_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
