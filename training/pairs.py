"""Image–caption pairs for training: read, split by a stable hash, decode with seeded augmentation."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from crossmodal_kernel.images import open_image
from training.config import AugmentConfig
from training.sources import SourceReport, iter_manifest
from training.synthetic.captions import scene_attributes
from training.text_augment import TextAugmenter


@dataclass(frozen=True)
class Pair:
    image: str
    text: str | None
    captions: tuple[str, ...] = ()  # more captions of the image (the manifest's ``captions``)
    attributes: tuple[tuple[str, str], ...] = ()  # the scene's (column, value)s, for paraphrase
    group: str | None = None  # the row's concept (``data.group_column``): rows of one group are siblings


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone: the same pair lands in the same split on every run."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def _split_path(manifest: Path, image: str) -> str:
    """The image's path as the split sees it: relative to the manifest's folder where it lies below it,
    so a dataset copied or moved elsewhere (a temporary folder, another machine) splits the same way."""
    try:
        return Path(image).resolve().relative_to(Path(manifest).resolve().parent).as_posix()
    except ValueError:
        return str(image)


def load_pairs(
    manifest: Path,
    val_fraction: float,
    split_column: str | None,
    report: SourceReport,
    images_only: bool = False,
    group_column: str | None = None,
) -> tuple[list[Pair], list[Pair]]:
    """``(train, val)`` pairs from a manifest; unusable rows are counted, not kept.

    A row needs an image and a text, or just an image when ``images_only``; without a ``text``, the
    first of its ``captions`` is its text. A pair keeps the row's ``captions`` and, for the synthetic
    worlds, its scene attributes (for ``augment.text``), and its ``group_column`` value as its group.
    """
    train, val = [], []
    for rec in iter_manifest(Path(manifest), report):
        text = rec.text or (rec.captions[0] if rec.captions else None)
        if not rec.image_path or not (text or images_only):
            report.skip("image-only rows need ssl.image_only" if rec.image_path else "row has no image")
            continue
        group = rec.metadata.get(group_column) if group_column else None
        group = None if group in (None, "") else str(group)
        pair = Pair(rec.image_path, text, rec.captions, scene_attributes(rec.metadata), group)
        if split_column:
            split = str(rec.metadata.get(split_column, "")).lower()
            if split in ("train", ""):
                train.append(pair)
            elif split in ("val", "valid", "validation"):
                val.append(pair)
        elif stable_fraction(f"{_split_path(manifest, rec.image_path)}\0{text or ''}") < val_fraction:
            val.append(pair)
        else:
            train.append(pair)
    return train, val


def train_transform(cfg: AugmentConfig, image_size: int, mean, std) -> Callable:
    """The augmentation policy of ``cfg`` (each part switchable) followed by the model's normalisation."""
    # Imported here: torchvision's import pulls in torch._dynamo (1.4 s), and this module is on the
    # API's import path (the evaluation sets' stable split), which never augments.
    from torchvision import transforms as T

    steps: list = [T.RandomResizedCrop(image_size, scale=cfg.crop_scale, interpolation=T.InterpolationMode.BICUBIC)]
    if cfg.flip:
        steps.append(T.RandomHorizontalFlip())
    if cfg.rotation > 0:  # the uncovered corners take the normalisation mean, 0 once normalised
        fill = [round(255 * m) for m in mean]
        steps.append(T.RandomRotation(cfg.rotation, interpolation=T.InterpolationMode.BILINEAR, fill=fill))
    if cfg.colour_jitter > 0:
        j = cfg.colour_jitter
        steps.append(T.RandomApply([T.ColorJitter(0.4 * j, 0.4 * j, 0.4 * j, 0.1 * j)], p=0.8))
    if cfg.grayscale > 0:
        steps.append(T.RandomGrayscale(p=cfg.grayscale))
    if cfg.blur > 0:
        steps.append(T.RandomApply([T.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=cfg.blur))
    steps.append(T.ToTensor())
    if cfg.illumination > 0:
        steps.append(T.RandomApply([RandomIllumination()], p=cfg.illumination))
    steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


class RandomIllumination(nn.Module):
    """Light that falls off across the image: each channel scaled by ``1 + a_c * t + b_c``, where ``t``
    runs linearly from -1/2 to 1/2 along a random direction (further at the corners), ``a_c`` is drawn
    from ±``strength`` and ``b_c`` from ±``strength / 4`` per channel, on a (3, H, W) tensor in [0, 1].

    Uneven lighting and tinted, graded backgrounds change every region of a frozen tower's feature
    map; the shift split's graded backgrounds cost the image head most of its render loss
    (docs/findings.md F22, ``benchmarks/probe_shift_render.py``). Hue is kept: an object's channels
    are scaled by nearly the same factors, so a caption's colour stays true. Torch's RNG draws
    everything, so :class:`PairDataset`'s per-sample seeding makes it repeatable.
    """

    def __init__(self, strength: float = 0.3):
        super().__init__()
        if not 0.0 < strength < 1.0:
            raise ValueError(f"strength must be in (0, 1), got {strength}")
        self.strength = strength

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        theta = float(torch.rand(())) * 2 * math.pi
        y = torch.linspace(-0.5, 0.5, h).view(h, 1)
        x = torch.linspace(-0.5, 0.5, w).view(1, w)
        t = math.cos(theta) * x + math.sin(theta) * y  # (h, w)
        a = (torch.rand(3) * 2 - 1) * self.strength
        b = (torch.rand(3) * 2 - 1) * self.strength / 4
        gain = 1 + a.view(3, 1, 1) * t + b.view(3, 1, 1)
        return (img * gain).clamp(0.0, 1.0)


@contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Run the block with the CPU generator (what torchvision's random transforms draw from) seeded
    with ``seed``, then put its state back. The CPU generator only: ``torch.manual_seed`` also queues a
    seed for every CUDA device and, before CUDA is initialised, records a stack trace each time it is
    called (1.7 ms an image, a third of a small fine-tune's time)."""
    state = torch.random.get_rng_state()
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


class PairDataset(Dataset):
    """Decodes pair ``i`` with augmentation seeded by ``(seed, epoch, i)``.

    Seeding per sample (not per worker) makes a batch's pixels independent of
    which worker decoded it, so a resumed run sees exactly the batches an
    uninterrupted one would have. ``text_augment`` (``None``: the pair's ``text``
    as it is) draws the caption from the same key.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        transform: Callable,
        seed: int,
        views: int = 1,
        text_augment: TextAugmenter | None = None,
    ):
        self.pairs = pairs
        self.transform = transform
        self.seed = seed
        self.views = views
        self.text_augment = text_augment
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        pair = self.pairs[i]
        try:
            image = open_image(pair.image)
        except Exception:  # a bad file must not stop training; the collate drops it
            return None
        with seeded_cpu_rng(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF):
            pixels = [self.transform(image) for _ in range(self.views)]
        return pixels, self.caption(i)

    def caption(self, i: int) -> str | None:
        """The caption pair ``i`` trains with in the current epoch."""
        pair = self.pairs[i]
        if self.text_augment is None or pair.text is None:
            return pair.text
        return self.text_augment(pair.text, pair.captions, pair.attributes, self.epoch, i)


class EpochSampler(torch.utils.data.Sampler[int]):
    """A permutation per epoch from ``(seed, epoch)``, started at ``start``: exact resume mid-epoch."""

    def __init__(self, n: int, seed: int, epoch: int = 0, start: int = 0):
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(self.n, generator=g)[self.start :].tolist()

    def __len__(self) -> int:
        return self.n - self.start


def sibling_groups(pairs: Sequence[Pair]) -> list[tuple[int, int]]:
    """Per pair, ``(group id, text id)``: ids equal for equal groups (-1: no group) and equal texts.

    Two pairs are siblings (neither a positive nor a negative of each other) when either id matches.
    """
    ids: dict[tuple[str, str | None], int] = {}
    out = []
    for p in pairs:
        group = -1 if p.group is None else ids.setdefault(("group", p.group), len(ids))
        out.append((group, ids.setdefault(("text", p.text), len(ids))))
    return out


def caption_id(text: str | None) -> int:
    """A stable non-negative 63-bit id of a caption string (-1 for none): equal on every rank and run."""
    if text is None:
        return -1
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1
