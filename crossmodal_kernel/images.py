"""The one image decoder: files and uploads alike, with one decompression-bomb guard.

Ingestion decodes files in DataLoader workers, where a file that cannot be read becomes
an error string for the caller to count, never an exception that stops the job; the API
decodes untrusted uploads and maps the errors below to 4xx answers.
"""

from __future__ import annotations

import io
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """An image that cannot be used; ``code`` is a stable name for the reason."""

    code = "corrupt_image"


class NotAnImage(ImageDecodeError):
    code = "not_an_image"


class TooManyPixels(ImageDecodeError):
    code = "too_many_pixels"


class CorruptImage(ImageDecodeError):
    code = "corrupt_image"


def open_image(source: str | Path | bytes | BinaryIO, max_pixels: int | None = None) -> Image.Image:
    """Decode an image fully, as RGB (transparent pixels become white).

    The pixel count is checked from the header, before decoding, so a decompression bomb
    is refused cheaply: over ``max_pixels`` (or over PIL's own limit) is :class:`TooManyPixels`.
    Raises :class:`NotAnImage`, :class:`CorruptImage`, or ``FileNotFoundError`` for a missing path.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) between 1x and 2x its own limit; treat both as a bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as im:
                if max_pixels is not None and im.width * im.height > max_pixels:
                    raise TooManyPixels(f"the image is {im.width}x{im.height} pixels; the limit is {max_pixels} pixels")
                im.load()
                return to_rgb(im)
    except (ImageDecodeError, FileNotFoundError):
        raise
    except UnidentifiedImageError as e:
        raise NotAnImage("not an image in a format we can read") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooManyPixels(f"the image has too many pixels: {e}") from e
    except Exception as e:  # truncated or corrupt data surfaces as OSError/SyntaxError/ValueError
        raise CorruptImage(f"the image could not be decoded: {e}") from e


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any PIL image; transparent pixels become white, not the colour under them.

    The one transparency rule for every path (ingest, query uploads, training, evaluation): an
    emoji or a logo on a transparent background is the same picture on white wherever it is
    decoded. Partly transparent pixels are blended onto white by their alpha. Transparency comes
    as an alpha band (RGBA, LA, PA, and the premultiplied RGBa, La) or as a ``transparency`` entry
    from a PNG ``tRNS`` chunk: one palette index, one grey level or one RGB colour marked clear
    (a palette, grey or RGB PNG with such a key would otherwise show that colour).
    """
    if has_transparency(image):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def has_transparency(image: Image.Image) -> bool:
    """Whether ``image`` can hold a transparent pixel: an alpha band, or a ``tRNS`` key."""
    return "transparency" in image.info or bool({"A", "a"} & set(image.getbands()))


class ImageFiles(Dataset):
    """``(key, path)`` pairs -> ``(key, tensor | None, error | None)``."""

    def __init__(self, items: Sequence[tuple[int, str]], preprocess: Callable, max_pixels: int | None = None):
        self.items = items
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        key, path = self.items[i]
        try:
            return key, self.preprocess(open_image(path, self.max_pixels)), None
        except Exception as e:  # a bad file is data, not a crash
            return key, None, f"{type(e).__name__}: {e}"


def collate_images(batch):
    """Stack the decodable images; return ``(keys, tensor | None, {key: error})``."""
    ok = [(k, t) for k, t, err in batch if err is None]
    bad = {k: err for k, _, err in batch if err is not None}
    keys = np.array([k for k, _ in ok], dtype=np.int64)
    tensors = torch.stack([t for _, t in ok]) if ok else None
    return keys, tensors, bad


MIN_SHM_BYTES = 256 * 2**20


def loader_workers(requested: int, shm: str = "/dev/shm") -> int:
    """``requested`` DataLoader workers, or 0 where shared memory is too small for them.

    Workers hand batches to the main process through ``/dev/shm``; Docker gives containers 64 MB
    by default, and there the workers fail to allocate and the loader waits forever, silently.
    Decoding in the main process is slower but finishes (run containers with ``--shm-size=1g``).
    """
    if requested <= 0:
        return 0
    try:
        free = shutil.disk_usage(shm).free
    except OSError:
        return requested  # no /dev/shm to judge (not Linux): trust the caller
    if free < MIN_SHM_BYTES:
        log.warning(
            "%s has %.0f MiB free, too little for DataLoader workers: decoding in this process "
            "(give the container --shm-size=1g to use %d workers)",
            shm,
            free / 2**20,
            requested,
        )
        return 0
    return requested


def worker_context(num_workers: int) -> str | None:
    """DataLoader multiprocessing context: CUDA cannot be re-initialised in a forked child."""
    return "spawn" if num_workers and torch.cuda.is_available() else None
