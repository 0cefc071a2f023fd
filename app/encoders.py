"""The service's encoders: one place turns the settings (device, batch size, runtime) into an :class:`Encoder`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.config import Settings

if TYPE_CHECKING:
    from crossmodal_kernel.encoder import Encoder
    from crossmodal_kernel.loading import LoadedModel


def onnx_cache(settings: Settings) -> Path:
    """Where graphs of models without a checkpoint of ours go (others' sit beside their checkpoint)."""
    return settings.data_dir / "onnx"


def load_encoder(settings: Settings, spec: str, device: str | None = None, runtime: str | None = None) -> Encoder:
    """The model ``spec`` names, on ``device`` (default: the configured one), batching as configured, run by
    ``runtime`` (default: ``CROSSMODAL_RUNTIME``); an ONNX export happens here on a version's first load."""
    from crossmodal_kernel.loading import load_model

    loaded = load_model(spec, device or settings.device)
    runtime = runtime or settings.runtime
    if runtime == "onnx-int8":
        from app.int8 import int8_encoder

        return int8_encoder(settings, loaded)
    from crossmodal_kernel.onnx_encoder import build_encoder

    return build_encoder(loaded, runtime, onnx_cache(settings), batch_size=settings.batch_size)


def wrap_encoder(settings: Settings, loaded: LoadedModel) -> Encoder:
    """An already loaded model, batching as configured, on PyTorch: its weights may have changed in memory
    (a model being trained), so it is no model version whose graphs could be cached."""
    from crossmodal_kernel.encoder import Encoder

    return Encoder(loaded, batch_size=settings.batch_size)
