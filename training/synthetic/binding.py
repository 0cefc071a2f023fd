"""A two-object synthetic world whose hard split tests *binding*, not attribute recognition.

Each image holds two shapes side by side: "a red circle to the left of a blue square".
Its distractor keeps every word and changes only which attribute goes with which
object: the colours trade places ("a blue circle to the left of a red square") or the
objects trade places ("a blue square to the left of a red circle"). A model that sees
the image as a bag of attributes (red, blue, circle, square) scores both captions
alike; only one that binds colour to shape and shape to side tells them apart. The
single-object world's distractors change an attribute outright, which a frozen
ImageNet tower with trained heads already separates (~0.99): too easy to measure
what hard negatives add.

Two layouts. ``sides`` (the default) puts one object in each half of the image, so a
coarse spatial grid already says which is left. ``free`` draws smaller objects at random
heights and horizontal positions (the left one still left of the other), often both in
the same half: "left of" is then a relation between the objects, not a property of an
image half.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.synthetic.captions import PAIRS_WORLD, worded
from training.synthetic.shapes import (
    _COLOUR_JITTER,
    _ROTATION_JITTER,
    COLOURS,
    SHAPES,
    SyntheticDataset,
    _background,
    _paint,
    caption_vocabulary,
    write_dataset,
)

BINDING_VERSION = 1
SWAPS = ("colour", "order")  # colours trade objects / objects trade sides
LAYOUTS = ("sides", "free")
MANIFEST_COLUMNS = ("id", "image", "text", "split", "left_colour", "left_shape", "right_colour", "right_shape")
_LEFT, _RIGHT, _RADIUS = (0.28, 0.5), (0.72, 0.5), 0.17
# free layout: radius, the margin that keeps a whole object on the canvas, and the least gap
# between the two centres (enough that the objects barely touch)
_FREE_RADIUS, _FREE_MARGIN, _FREE_GAP = 0.12, 0.13, 0.26


@dataclass(frozen=True)
class PairScene:
    left_colour: str
    left_shape: str
    right_colour: str
    right_shape: str

    def caption(self) -> str:
        return f"a {self.left_colour} {self.left_shape} to the left of a {self.right_colour} {self.right_shape}"

    def swapped(self, kind: str) -> PairScene:
        if kind == "colour":
            return PairScene(self.right_colour, self.left_shape, self.left_colour, self.right_shape)
        if kind == "order":
            return PairScene(self.right_colour, self.right_shape, self.left_colour, self.left_shape)
        raise ValueError(f"unknown swap {kind!r}; expected one of {SWAPS}")


def sample_pair(rng: np.random.Generator) -> PairScene:
    """Two objects with different colours and different shapes, so every swap changes the caption."""
    c1, c2 = rng.choice(list(COLOURS), size=2, replace=False)
    s1, s2 = rng.choice(list(SHAPES), size=2, replace=False)
    return PairScene(str(c1), str(s1), str(c2), str(s2))


def free_centres(rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two centres anywhere on the canvas with the first left of the second by at least the gap."""
    lo, hi = _FREE_MARGIN, 1 - _FREE_MARGIN
    x1 = rng.uniform(lo, hi - _FREE_GAP)
    x2 = rng.uniform(x1 + _FREE_GAP, hi)
    y1, y2 = rng.uniform(lo, hi, size=2)
    return (float(x1), float(y1)), (float(x2), float(y2))


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def render_pair(
    scene: PairScene, image_size: int = 128, rng: np.random.Generator | None = None, layout: str = "sides"
) -> Image.Image:
    """The scene as an image; ``rng`` adds jitter (and, for the ``free`` layout, draws the positions)."""
    _check_layout(layout)
    if layout == "free" and rng is None:
        raise ValueError("the free layout draws object positions: pass an rng")
    pixels = _background(image_size, rng)
    if layout == "sides":
        centres, base_radius = (_LEFT, _RIGHT), _RADIUS
    else:
        assert rng is not None  # checked above: the free layout needs one
        centres, base_radius = free_centres(rng), _FREE_RADIUS
    for colour, shape, (cx, cy) in (
        (scene.left_colour, scene.left_shape, centres[0]),
        (scene.right_colour, scene.right_shape, centres[1]),
    ):
        rgb = np.array(COLOURS[colour], dtype=np.float32)
        angle, radius = 0.0, base_radius
        if rng is not None:
            if layout == "sides":
                cx, cy = cx + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.15, 0.15)
            radius *= 1 + rng.uniform(-0.1, 0.1)
            angle = rng.uniform(-_ROTATION_JITTER, _ROTATION_JITTER)
            rgb = rgb + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3)
        pixels = _paint(pixels, shape, rgb, (cx, cy), radius, angle)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def generate_binding_dataset(
    out_dir: str | Path,
    n: int = 2000,
    seed: int = 0,
    image_size: int = 128,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    progress: Callable[[int, int], None] | None = None,
    layout: str = "sides",
    captions: str = "canonical",
    n_captions: int = 1,
) -> SyntheticDataset:
    """Like :func:`training.synthetic.shapes.generate_dataset`, for two-object scenes (same files and guarantees,
    ``captions="varied"`` included: the training pool of :data:`training.synthetic.captions.PAIRS_WORLD`)."""
    _check_layout(layout)  # before any file is written
    vocab = caption_vocabulary(captions, n_captions, PAIRS_WORLD)
    params = {"world": "binding", "version": BINDING_VERSION, "n": n, "seed": seed, "image_size": image_size,
              "splits": [float(f) for f in splits]}  # fmt: skip
    if layout != "sides":  # the default layout keeps the parameters (and cached datasets) it always had
        params["layout"] = layout
    if vocab is not None:
        params |= {"captions": captions, "n_captions": n_captions}

    def make_row(i: int, root: Path, split: str, n_hard: int) -> tuple[dict, dict | None]:
        rng = np.random.default_rng([seed, 3, i])
        scene = sample_pair(rng)
        image = f"images/{i:06d}.png"
        render_pair(scene, image_size, rng, layout).save(root / image, compress_level=1)
        texts, wording = worded(scene.__dict__, vocab, np.random.default_rng([seed, 9, i]), n_captions,
                                canonical=lambda values: PairScene(**values).caption())  # fmt: skip
        row = {"id": f"{i:06d}", "image": image, "text": texts[0], "split": split, **scene.__dict__}
        if vocab is not None:
            row["captions"] = json.dumps(texts)
        if split != "test":
            return row, None
        kind = SWAPS[n_hard % len(SWAPS)]
        return row, {"id": row["id"], "image": image, "text": row["text"],
                     "distractor": wording(scene.swapped(kind).__dict__), "swapped": kind}  # fmt: skip

    columns = MANIFEST_COLUMNS + (("captions",) if vocab is not None else ())
    return write_dataset(out_dir, params, n, seed, image_size, splits, columns, make_row, progress)
