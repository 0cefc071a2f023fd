"""Embedding shards on disk: ``shard-NNNNN.npy`` (float16 vectors) + ``shard-NNNNN.ids.npy`` (int64 DB ids).

A shard is visible only once its ids file exists, and both files are written
under temporary names and renamed, vectors first: a reader never sees a
half-written shard, and a crash loses at most the shard in flight.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from crossmodal_kernel.atomic import atomic_path

# shard-00007 (numbered) or shard-000000000101-000000000164 (the id range a planned job covers)
_SHARD = re.compile(r"^(shard-(\d{5,})(?:-\d+)?)\.ids\.npy$")


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def shard_stems(directory: Path) -> list[str]:
    """Names of the finished shards in ``directory`` (those whose ids file exists), in order."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(2)), m.group(1)) for p in directory.iterdir() if (m := _SHARD.match(p.name))]
    return [stem for _, stem in sorted(found)]


def shard_numbers(directory: Path) -> list[int]:
    return [int(stem.split("-")[1]) for stem in shard_stems(directory)]


def shard_exists(directory: Path, stem: str) -> bool:
    return (directory / f"{stem}.ids.npy").is_file()


def write_shard(
    directory: Path, ids: np.ndarray, x: np.ndarray, number: int | None = None, stem: str | None = None
) -> Path:
    """Write one shard named ``stem``, or numbered one past the highest existing shard."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    x = np.ascontiguousarray(x, dtype=np.float16)
    if x.ndim != 2 or len(ids) != len(x):
        raise ValueError(f"shard shapes disagree: ids {ids.shape}, vectors {x.shape}")
    directory.mkdir(parents=True, exist_ok=True)
    if stem is None:
        if number is None:
            existing = shard_numbers(directory)
            number = existing[-1] + 1 if existing else 0
        stem = f"shard-{number:05d}"
    _save_atomic(directory / f"{stem}.npy", x)
    _save_atomic(directory / f"{stem}.ids.npy", ids)
    return directory / f"{stem}.npy"


def iter_shards(directory: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ids, x)`` per finished shard, in shard order; ``x`` is float32."""
    for stem in shard_stems(directory):
        ids = np.load(directory / f"{stem}.ids.npy")
        x = np.load(directory / f"{stem}.npy", mmap_mode="r")
        yield ids, np.asarray(x, dtype=np.float32)


def embedded_ids(directory: Path) -> np.ndarray:
    """All ids that already have an embedding in ``directory`` (sorted, unique)."""
    parts = [np.load(directory / f"{stem}.ids.npy") for stem in shard_stems(directory)]
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
