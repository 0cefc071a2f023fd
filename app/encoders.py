"""The service's encoders: one place turns the settings (device, batch size) into an :class:`Encoder`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.config import Settings

if TYPE_CHECKING:
    from crossmodal_kernel.encoder import Encoder
    from crossmodal_kernel.loading import LoadedModel


def load_encoder(settings: Settings, spec: str, device: str | None = None) -> Encoder:
    """The model ``spec`` names, on ``device`` (default: the configured one), batching as configured."""
    from crossmodal_kernel.encoder import Encoder

    return Encoder.from_spec(spec, device=device or settings.device, batch_size=settings.batch_size)


def wrap_encoder(settings: Settings, loaded: LoadedModel) -> Encoder:
    """An already loaded model, batching as configured."""
    from crossmodal_kernel.encoder import Encoder

    return Encoder(loaded, batch_size=settings.batch_size)
