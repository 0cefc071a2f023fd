"""Embedding shards on disk: ``shard-NNNNN.npy`` (float16 vectors) + ``shard-NNNNN.ids.npy`` (int64 DB ids).

A shard is visible only once its ids file exists, and both files are written
under temporary names and renamed, vectors first: a reader never sees a
half-written shard, and a crash loses at most the shard in flight.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_SHARD = re.compile(r"^shard-(\d{5,})\.ids\.npy$")


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_numbers(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _SHARD.match(p.name)))


def write_shard(directory: Path, ids: np.ndarray, x: np.ndarray, number: int | None = None) -> Path:
    """Write one shard; ``number`` defaults to one past the highest existing shard."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    x = np.ascontiguousarray(x, dtype=np.float16)
    if x.ndim != 2 or len(ids) != len(x):
        raise ValueError(f"shard shapes disagree: ids {ids.shape}, vectors {x.shape}")
    directory.mkdir(parents=True, exist_ok=True)
    if number is None:
        existing = shard_numbers(directory)
        number = existing[-1] + 1 if existing else 0
    stem = directory / f"shard-{number:05d}"
    _save_atomic(stem.with_suffix(".npy"), x)
    _save_atomic(stem.with_name(stem.name + ".ids.npy"), ids)
    return stem.with_suffix(".npy")


def iter_shards(directory: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ids, x)`` per finished shard, in shard order; ``x`` is float32."""
    for n in shard_numbers(directory):
        stem = directory / f"shard-{n:05d}"
        ids = np.load(stem.with_name(stem.name + ".ids.npy"))
        x = np.load(stem.with_suffix(".npy"), mmap_mode="r")
        yield ids, np.asarray(x, dtype=np.float32)


def embedded_ids(directory: Path) -> np.ndarray:
    """All ids that already have an embedding in ``directory`` (sorted, unique)."""
    parts = [np.load(directory / f"shard-{n:05d}.ids.npy") for n in shard_numbers(directory)]
    if not parts:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(parts))


def load_all(directory: Path, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every shard; later shards win when an id repeats (a re-embedded item)."""
    id_parts, x_parts = [], []
    for ids, x in iter_shards(directory):
        id_parts.append(ids)
        x_parts.append(x)
    if not id_parts:
        return np.empty(0, dtype=np.int64), np.empty((0, dim or 0), dtype=np.float32)
    ids = np.concatenate(id_parts)
    x = np.concatenate(x_parts)
    # keep the last occurrence of every id
    _, last = np.unique(ids[::-1], return_index=True)
    keep = np.sort(len(ids) - 1 - last)
    return ids[keep], x[keep]
