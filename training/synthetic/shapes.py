"""A procedural world of coloured shapes with captions, deterministic by seed.

Each image shows one object described by four attributes (colour, shape, size,
position) on a light, tinted, slightly noisy background; its caption is a fixed
function of the attributes ("a large red circle in the top left"). The world is
small enough to learn on a CPU and rich enough to test what a retrieval model
actually binds: the "hard" file pairs every test caption with a distractor that
differs in exactly one attribute, so a model that only matches "red" or
"circle" in isolation cannot tell the two apart.

Everything is a pure function of the seed: each item draws from its own
``numpy.random.default_rng([seed, stream, index])``, so an item never depends on
the order in which the others were generated, and the same seed gives
byte-identical PNGs and CSVs.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from crossmodal_kernel.atomic import atomic_path
from training.synthetic.captions import SHAPES_WORLD, Vocabulary, worded

# Saturated, mutually far-apart colours (pairwise RGB distance >= 85) that
# all stand out against the light background; white and greys are left out
# because the background is light grey.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "orange": (245, 130, 15),
    "yellow": (240, 215, 20),
    "green": (30, 150, 45),
    "blue": (25, 70, 215),
    "purple": (125, 40, 170),
    "pink": (245, 115, 190),
    "black": (25, 25, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")

# Attributes the hard split swaps. Size is left out: with two values it makes
# a much weaker (binary) distractor than the others.
SWAPPABLE: tuple[str, ...] = ("colour", "shape", "position")

# Bump when rendering or captions change, so cached datasets are regenerated.
GENERATOR_VERSION = 1

# Object centre (fraction of the image side) per position, and circumradius
# (fraction of the side) per size. Corners sit at 0.3/0.7 so a large object
# with maximal jitter still fits inside the frame.
_CENTRES = {
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
    "center": (0.5, 0.5),
}
_RADII = {"small": 0.13, "large": 0.23}
_POSITION_JITTER = 0.04  # +- fraction of the side
_SIZE_JITTER = 0.10  # +- relative
_ROTATION_JITTER = 15.0  # +- degrees: small enough that a square never reads as a diamond
_COLOUR_JITTER = 10  # +- per channel
_SUPERSAMPLE = 4  # draw the mask at 4x and box-filter down: anti-aliased edges


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    size: str
    position: str

    def caption(self) -> str:
        """The canonical caption; evaluations match duplicates by this string."""
        where = "the center" if self.position == "center" else f"the {self.position}"
        return f"a {self.size} {self.colour} {self.shape} in {where}"


_VOCAB = {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES, "position": POSITIONS}


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw each attribute uniformly and independently."""
    return Scene(**{name: str(rng.choice(values)) for name, values in _VOCAB.items()})


def all_scenes() -> list[Scene]:
    """Every scene of the world, in attribute order."""
    return [Scene(**dict(zip(_VOCAB, values, strict=True))) for values in itertools.product(*_VOCAB.values())]


N_SCENES = len(COLOURS) * len(SHAPES) * len(SIZES) * len(POSITIONS)


def swap_attribute(scene: Scene, attribute: str, rng: np.random.Generator) -> Scene:
    """Return ``scene`` with ``attribute`` replaced by a different, random value."""
    if attribute not in _VOCAB:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {tuple(_VOCAB)}")
    current = getattr(scene, attribute)
    others = [v for v in _VOCAB[attribute] if v != current]
    return Scene(**{**asdict(scene), attribute: str(rng.choice(others))})


def _outline(shape: str) -> np.ndarray:
    """Polygon vertices in unit coordinates (y down), extent roughly [-1, 1]."""

    def ring(k: int, radius: float | np.ndarray, start_deg: float) -> np.ndarray:
        a = np.deg2rad(start_deg) + 2 * np.pi * np.arange(k) / k
        return np.stack([np.cos(a), np.sin(a)], axis=1) * np.reshape(radius, (-1, 1))

    if shape == "circle":
        return ring(64, 1.0, 0)
    if shape == "square":
        return np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
    if shape == "triangle":  # pointing up, shifted so its bounding box is centred
        return ring(3, 1.1, -90) + [0.0, 0.275]
    if shape == "star":  # five points, inner radius 0.45
        return ring(10, np.tile([1.0, 0.45], 5), -90)
    if shape == "hexagon":
        return ring(6, 0.95, 0)
    if shape == "cross":  # a plus sign
        w, L = 0.32, 0.95
        return np.array(
            [
                [-w, -L],
                [w, -L],
                [w, -w],
                [L, -w],
                [L, w],
                [w, w],
                [w, L],
                [-w, L],
                [-w, w],
                [-L, w],
                [-L, -w],
                [-w, -w],
            ]
        )
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(scene: Scene, image_size: int = 128, rng: np.random.Generator | None = None) -> Image.Image:
    """Draw ``scene`` as an RGB image.

    With ``rng`` the background tint and blotches and the object's exact
    position, size, rotation and shade are jittered, so no two renders are
    identical; with ``rng=None`` the canonical, jitter-free image is drawn.
    """
    S = image_size
    cx, cy = _CENTRES[scene.position]
    radius = _RADII[scene.size]
    colour = np.array(COLOURS[scene.colour], dtype=np.float32)
    angle = 0.0
    if rng is not None:
        cx, cy = np.array([cx, cy]) + rng.uniform(-_POSITION_JITTER, _POSITION_JITTER, 2)
        radius *= 1 + rng.uniform(-_SIZE_JITTER, _SIZE_JITTER)
        angle = rng.uniform(-_ROTATION_JITTER, _ROTATION_JITTER)
        colour = colour + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3)
    pixels = _paint(_background(S, rng), scene.shape, colour, (cx, cy), radius, angle)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def _background(S: int, rng: np.random.Generator | None) -> np.ndarray:
    """Plain light grey without ``rng``; with it, light grey tinted per channel with smooth
    colour blotches (a 4x4 random field upsampled): smooth rather than per-pixel noise keeps
    the PNGs small and fast to write."""
    if rng is None:
        return np.full((S, S, 3), 230.0, dtype=np.float32)
    base = (rng.uniform(205, 240) + rng.uniform(-12, 12, 3)).astype(np.float32)
    field = np.clip(128 + rng.normal(0, 6, (4, 4, 3)), 0, 255).astype(np.uint8)
    blotches = Image.fromarray(field, "RGB").resize((S, S), Image.Resampling.BICUBIC)
    return base + np.asarray(blotches, dtype=np.float32) - 128


def _paint(pixels: np.ndarray, shape: str, colour, centre, radius: float, angle: float) -> np.ndarray:
    """``pixels`` (H, W, 3 float) with an anti-aliased ``shape`` blended in."""
    S = pixels.shape[0]
    t = np.deg2rad(angle)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    points = (_outline(shape) @ rotation.T * radius + list(centre)) * S * _SUPERSAMPLE
    mask = Image.new("L", (S * _SUPERSAMPLE, S * _SUPERSAMPLE), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in points], fill=255)
    alpha = np.asarray(mask.reduce(_SUPERSAMPLE), dtype=np.float32)[..., None] / 255.0
    colour = np.clip(np.asarray(colour, dtype=np.float32), 0, 255).astype(np.float32)
    return pixels + (colour - pixels) * alpha


@dataclass
class SyntheticDataset:
    """A generated dataset on disk; image paths in the CSVs are relative to ``root``."""

    root: Path
    manifest: Path
    hard: Path

    def rows(self, split: str | None = None) -> list[dict]:
        """Manifest rows (all values strings, as in the CSV), optionally one split."""
        rows = _read_csv(self.manifest)
        return rows if split is None else [r for r in rows if r["split"] == split]

    def hard_rows(self) -> list[dict]:
        """Rows of hard.csv: id, image, text, distractor, swapped."""
        return _read_csv(self.hard)

    def image_path(self, row: dict) -> Path:
        return self.root / row["image"]


MANIFEST_COLUMNS = ("id", "image", "text", "split", "colour", "shape", "size", "position")
HARD_COLUMNS = ("id", "image", "text", "distractor", "swapped")
SPLIT_NAMES = ("train", "val", "test")


def load_dataset(root: str | Path) -> SyntheticDataset:
    """Reopen a generated dataset; a folder without a manifest is not one (or is half-written)."""
    root = Path(root)
    if not (root / "manifest.csv").is_file():
        raise FileNotFoundError(f"no complete synthetic dataset in {root} (manifest.csv missing)")
    return SyntheticDataset(root=root, manifest=root / "manifest.csv", hard=root / "hard.csv")


CAPTION_MODES = ("canonical", "varied")


def generate_dataset(
    out_dir: str | Path,
    n: int = 2000,
    seed: int = 0,
    image_size: int = 128,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    progress: Callable[[int, int], None] | None = None,
    captions: str = "canonical",
    n_captions: int = 1,
    cover: bool = False,
) -> SyntheticDataset:
    """Write ``n`` images, ``manifest.csv``, ``hard.csv`` and ``dataset.json`` to ``out_dir``.

    If the folder already holds a complete dataset with the same parameters it
    is returned untouched. The manifest is removed first and written last, so
    a run that was interrupted leaves no manifest and is redone next time.

    ``captions="varied"`` words each caption from the training pool of
    :mod:`training.synthetic.captions` (templates, synonyms, word order) instead of the canonical
    :meth:`Scene.caption`, and adds a ``captions`` column: a JSON list of ``n_captions``
    wordings, the first of which is ``text`` (the trainer's ``augment.text.multi_caption``
    draws from it). Images are those of the canonical dataset, byte for byte; a distractor
    is worded like its true caption.

    ``cover=True`` makes the first :data:`N_SCENES` items every scene of the world once, in an
    order drawn from ``seed`` (the rest stay random), so that with ``n >= N_SCENES`` every caption
    the world can say has an answer (the demo's data: 2,000 independent draws miss about 7 of
    the 480 scenes). Each item is still rendered from its own RNG stream.
    """
    params = {
        "version": GENERATOR_VERSION,
        "n": n,
        "seed": seed,
        "image_size": image_size,
        "splits": [float(f) for f in splits],
    }
    vocab = caption_vocabulary(captions, n_captions, SHAPES_WORLD)
    if vocab is not None:  # the default keeps the parameters (and cached datasets) it always had
        params |= {"captions": captions, "n_captions": n_captions}
    if cover:
        params["cover"] = True
    make_row = shapes_rows(seed, image_size, vocab, n_captions, render, streams=(0, 5, 1), cover=cover)
    columns = MANIFEST_COLUMNS + (("captions",) if vocab is not None else ())
    return write_dataset(out_dir, params, n, seed, image_size, splits, columns, make_row, progress)


def caption_vocabulary(captions: str, n_captions: int, world: dict[str, Vocabulary]) -> Vocabulary | None:
    """The training pool for ``captions="varied"``, ``None`` for canonical captions; checks the pair."""
    if captions not in CAPTION_MODES:
        raise ValueError(f"unknown captions {captions!r}; expected one of {CAPTION_MODES}")
    if n_captions < 1 or (captions == "canonical" and n_captions != 1):
        raise ValueError("n_captions must be >= 1, and 1 for canonical captions")
    return world["train"] if captions == "varied" else None


def shapes_rows(
    seed: int,
    image_size: int,
    vocab: Vocabulary | None,
    n_captions: int,
    draw: Callable[[Scene, int, np.random.Generator], Image.Image],
    streams: tuple[int, int, int],
    cover: bool = False,
) -> Callable[[int, Path, str, int], tuple[dict, dict | None]]:
    """``make_row`` for :func:`write_dataset`: item ``i`` drawn from the ``(scene, wording, distractor)``
    RNG ``streams``, rendered by ``draw``, captioned canonically or (with ``vocab``) in varied words;
    with ``cover``, items below :data:`N_SCENES` take every scene once (see :func:`generate_dataset`)."""
    scene_stream, wording_stream, distractor_stream = streams
    scenes = all_scenes()
    covered = [scenes[j] for j in np.random.default_rng([seed, 7]).permutation(N_SCENES)] if cover else []

    def make_row(i: int, root: Path, split: str, n_hard: int) -> tuple[dict, dict | None]:
        rng = np.random.default_rng([seed, scene_stream, i])
        scene = sample_scene(rng)  # drawn even when covered, so the rendering draws stay the same
        scene = covered[i] if i < len(covered) else scene
        image = f"images/{i:06d}.png"
        # Fastest zlib level: the images are simple and this keeps 2,000 of them to seconds.
        draw(scene, image_size, rng).save(root / image, compress_level=1)
        texts, wording = worded(asdict(scene), vocab, np.random.default_rng([seed, wording_stream, i]), n_captions,
                                canonical=lambda values: Scene(**values).caption())  # fmt: skip
        row = {"id": f"{i:06d}", "image": image, "text": texts[0], "split": split, **asdict(scene)}
        if vocab is not None:
            row["captions"] = json.dumps(texts)
        if split != "test":
            return row, None
        # Rotate the swapped attribute over the test items (offset by the seed) so each
        # kind of distractor is equally represented.
        swapped = SWAPPABLE[(n_hard + seed) % len(SWAPPABLE)]
        distractor = swap_attribute(scene, swapped, np.random.default_rng([seed, distractor_stream, i]))
        return row, {"id": row["id"], "image": image, "text": row["text"], "distractor": wording(asdict(distractor)),
                     "swapped": swapped}  # fmt: skip

    return make_row


def write_dataset(
    out_dir: str | Path,
    params: dict,
    n: int,
    seed: int,
    image_size: int,
    splits: tuple[float, float, float],
    columns: tuple[str, ...],
    make_row: Callable[[int, Path, str, int], tuple[dict, dict | None]],
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticDataset:
    """The writer behind every synthetic world: ``make_row(i, root, split, hard_so_far)`` renders image ``i``
    under ``root`` and returns its manifest row (``columns``) and, for a test item, its hard pair.

    A complete dataset with the same ``params`` is returned untouched; otherwise the
    manifest is removed first and written last, so an interrupted run is redone.
    """
    _check_parameters(n, seed, image_size, splits)
    root = Path(out_dir)
    if _is_complete(root, params):
        return load_dataset(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").unlink(missing_ok=True)
    split_of = _assign_splits(n, splits, seed)
    rows: list[dict] = []
    hard: list[dict] = []
    for i in range(n):
        row, pair = make_row(i, root, split_of[i], len(hard))
        rows.append(row)
        if pair is not None:
            hard.append(pair)
        if progress is not None:
            progress(i + 1, n)
    _remove_stale_images(images, n)
    return _publish(root, params, columns, rows, hard)


def _check_parameters(n: int, seed: int, image_size: int, splits: tuple[float, float, float]) -> None:
    if n < 1 or seed < 0 or image_size < 8:
        raise ValueError("need n >= 1, seed >= 0 and image_size >= 8")
    if len(splits) != 3 or min(splits) < 0 or not np.isclose(sum(splits), 1.0):
        raise ValueError(f"splits must be three non-negative fractions summing to 1, got {splits}")


def _remove_stale_images(images: Path, n: int) -> None:
    """Delete images left over from an earlier, larger dataset in the same folder."""
    for stale in images.glob("*.png"):
        if stale.stem.isdigit() and int(stale.stem) >= n:
            stale.unlink()


def _publish(root: Path, params: dict, columns: tuple[str, ...], rows: list[dict], hard: list[dict]):
    """Write the hard split, the parameters and, last, the manifest that marks the dataset complete."""
    _write_atomic(root / "hard.csv", lambda f: _write_csv(f, HARD_COLUMNS, hard))
    _write_atomic(root / "dataset.json", lambda f: json.dump(params, f, indent=2))
    _write_atomic(root / "manifest.csv", lambda f: _write_csv(f, columns, rows))
    return load_dataset(root)


def _assign_splits(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """Exact split sizes (rounded), members chosen by a seeded permutation."""
    n_train = round(n * fractions[0])
    n_val = min(round(n * fractions[1]), n - n_train)
    labels = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val))
    split_of = np.empty(n, dtype=object)
    split_of[np.random.default_rng([seed, 2]).permutation(n)] = labels
    return [str(label) for label in split_of]


def _is_complete(root: Path, params: dict) -> bool:
    try:
        saved = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return saved == params and (root / "manifest.csv").is_file() and (root / "hard.csv").is_file()


def _write_atomic(path: Path, write: Callable) -> None:
    """Write through a temporary name and rename, so readers never see half a file."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        write(f)


def _write_csv(f, columns: tuple[str, ...], rows: list[dict]) -> None:
    writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


__all__ = [
    "COLOURS",
    "SHAPES",
    "SIZES",
    "POSITIONS",
    "SWAPPABLE",
    "N_SCENES",
    "Scene",
    "all_scenes",
    "SyntheticDataset",
    "sample_scene",
    "swap_attribute",
    "render",
    "generate_dataset",
    "load_dataset",
    "CAPTION_MODES",
]
