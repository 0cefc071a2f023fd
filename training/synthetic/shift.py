"""The shift split: the shapes world worded and drawn in ways that training never shows.

A model trained on :func:`training.synthetic.shapes.generate_dataset` (canonical or varied captions)
and evaluated on its test split is measured in distribution. The shift split keeps the world
(the same colours, shapes, sizes and positions, so every caption stays answerable) and changes
everything else at once:

- **words**: captions come from the ``shift`` pool of :mod:`training.synthetic.captions`, whose templates
  and synonyms share nothing with the ``train`` pool that varied captions and paraphrase
  augmentation draw from;
- **rendering**: :data:`SHIFT_STYLE` against :data:`TRAIN_STYLE` (what
  :func:`training.synthetic.shapes.render` does): a gradient or striped background instead of tinted
  blotches, a dark outline, stronger rotation, Gaussian blur and objects drawn smaller. Each
  range is disjoint from its training counterpart, and sizes stay ordered (the largest "small"
  object is smaller than the smallest "large" one).

Every item is a test item (with a hard pair whose distractor is worded like the caption), and
the split has its own ``dataset.json`` (``"world": "shapes-shift"``) and manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.synthetic.captions import SHAPES_WORLD
from training.synthetic.shapes import (
    _CENTRES,
    _COLOUR_JITTER,
    _POSITION_JITTER,
    _RADII,
    _ROTATION_JITTER,
    _SIZE_JITTER,
    _SUPERSAMPLE,
    COLOURS,
    MANIFEST_COLUMNS,
    Scene,
    SyntheticDataset,
    _outline,
    shapes_rows,
    write_dataset,
)

SHIFT_VERSION = 1
_OUTLINE_RGB = np.array([45.0, 45.0, 45.0], dtype=np.float32)


@dataclass(frozen=True)
class RenderStyle:
    """How a world is drawn; ranges are (low, high), widths and blur in pixels of a 128-px image."""

    backgrounds: tuple[str, ...]
    outline_px: tuple[float, float]
    rotation_deg: tuple[float, float]  # |angle|
    blur_px: tuple[float, float]
    scale: tuple[float, float]  # factor on the size's radius


# What training.synthetic.shapes.render draws (documented here, not used by it: it predates the styles).
TRAIN_STYLE = RenderStyle(
    backgrounds=("blotches",),
    outline_px=(0.0, 0.0),
    rotation_deg=(0.0, _ROTATION_JITTER),
    blur_px=(0.0, 0.0),
    scale=(1 - _SIZE_JITTER, 1 + _SIZE_JITTER),
)
SHIFT_STYLE = RenderStyle(
    backgrounds=("gradient", "stripes"),
    outline_px=(1.5, 2.5),
    rotation_deg=(20.0, 35.0),
    blur_px=(0.7, 1.3),
    scale=(0.72, 0.84),
)


def render_shifted(
    scene: Scene, image_size: int = 128, rng: np.random.Generator | None = None, style: RenderStyle = SHIFT_STYLE
) -> Image.Image:
    """Draw ``scene`` in ``style``; every setting is drawn from ``rng`` (a fixed seed without one)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    S, px = image_size, image_size / 128
    cx, cy = np.array(_CENTRES[scene.position]) + rng.uniform(-_POSITION_JITTER, _POSITION_JITTER, 2)
    radius = _RADII[scene.size] * rng.uniform(*style.scale)
    angle = rng.choice([-1.0, 1.0]) * rng.uniform(*style.rotation_deg)
    colour = np.array(COLOURS[scene.colour], dtype=np.float32) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3)
    pixels = _background(S, str(rng.choice(style.backgrounds)), rng)
    fill, edge = _masks(S, scene.shape, (cx, cy), radius, angle, rng.uniform(*style.outline_px) * px)
    pixels = pixels + (np.clip(colour, 0, 255) - pixels) * fill
    pixels = pixels + (_OUTLINE_RGB - pixels) * edge
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
    blur = rng.uniform(*style.blur_px) * px
    return image.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else image


def _background(S: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A light linear gradient between two tints in a random direction, or light diagonal stripes."""
    y, x = np.mgrid[0:S, 0:S].astype(np.float32) / S
    if kind == "gradient":
        a, b = rng.uniform(175, 245, 3), rng.uniform(175, 245, 3)
        theta = rng.uniform(0, 2 * np.pi)
        t = np.clip((np.cos(theta) * (x - 0.5) + np.sin(theta) * (y - 0.5)) + 0.5, 0, 1)[..., None]
        return (a + (b - a) * t).astype(np.float32)
    if kind == "stripes":
        a, b = rng.uniform(200, 245, 3), rng.uniform(170, 215, 3)
        period = rng.uniform(0.08, 0.16)
        band = ((x + y * rng.choice([-1.0, 1.0])) / period % 1.0 < 0.5)[..., None]
        return np.where(band, a, b).astype(np.float32)
    raise ValueError(f"unknown background {kind!r}")


def _masks(S: int, shape: str, centre, radius: float, angle: float, outline: float) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased (fill, outline) coverage in [0, 1], each (S, S, 1)."""
    t = np.deg2rad(angle)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    points = [tuple(p) for p in (_outline(shape) @ rotation.T * radius + list(centre)) * S * _SUPERSAMPLE]
    out = []
    for kwargs in ({"fill": 255}, {"outline": 255, "width": max(1, round(outline * _SUPERSAMPLE))}):
        mask = Image.new("L", (S * _SUPERSAMPLE, S * _SUPERSAMPLE), 0)
        if "fill" in kwargs or outline > 0:
            ImageDraw.Draw(mask).polygon(points, **kwargs)
        out.append(np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float32)[..., None] / 255.0)
    return out[0], out[1]


def generate_shift_dataset(
    out_dir: str | Path,
    n: int = 200,
    seed: int = 0,
    image_size: int = 128,
    n_captions: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticDataset:
    """Write the shift split: ``n`` test items with ``manifest.csv``, ``hard.csv`` and ``dataset.json``.

    Same files, caching and atomicity as :func:`training.synthetic.shapes.generate_dataset`; scenes come
    from RNG streams of their own, so they are not the training world's images redrawn. The
    manifest also has the ``captions`` column (a JSON list of ``n_captions`` shift wordings).
    """
    params = {"world": "shapes-shift", "version": SHIFT_VERSION, "n": n, "seed": seed, "image_size": image_size,
              "n_captions": n_captions}  # fmt: skip
    if n_captions < 1:
        raise ValueError("n_captions must be >= 1")
    make_row = shapes_rows(seed, image_size, SHAPES_WORLD["shift"], n_captions, render_shifted, streams=(6, 7, 8))
    columns = MANIFEST_COLUMNS + ("captions",)
    return write_dataset(out_dir, params, n, seed, image_size, (0.0, 0.0, 1.0), columns, make_row, progress)


__all__ = ["RenderStyle", "TRAIN_STYLE", "SHIFT_STYLE", "render_shifted", "generate_shift_dataset"]
