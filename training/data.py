"""Image decoding shared by training and batch embedding.

Decoding happens in DataLoader worker processes; a file that cannot be read
becomes an error string for the caller to count, never an exception that
stops the job.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


def open_image(path: str, max_pixels: int | None = None) -> Image.Image:
    """Decode an image fully as RGB; raises on corrupt files and decompression bombs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise ValueError(f"{im.width}x{im.height} exceeds {max_pixels} pixels")
            im.load()
            return im.convert("RGB")


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


def worker_context(num_workers: int) -> str | None:
    # CUDA cannot be re-initialised in a forked child.
    return "spawn" if num_workers and torch.cuda.is_available() else None
