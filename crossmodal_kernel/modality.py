"""The two modalities every index, embedding folder and search target is one of."""

from __future__ import annotations

from enum import StrEnum


class Modality(StrEnum):
    IMAGE = "image"
    TEXT = "text"

    @property
    def other(self) -> Modality:
        """The modality a cross-modal query of this one comes from (text queries an image index)."""
        return Modality.TEXT if self is Modality.IMAGE else Modality.IMAGE


MODALITIES: tuple[Modality, ...] = tuple(Modality)


def as_modality(value: str) -> Modality:
    """``value`` as a :class:`Modality`, or a ValueError naming the accepted values."""
    try:
        return Modality(value)
    except ValueError:
        raise ValueError(f"modality must be one of {[m.value for m in Modality]}, got {value!r}") from None
