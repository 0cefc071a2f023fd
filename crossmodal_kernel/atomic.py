"""Publishing files and folders so that a reader never sees half of one, and a crash loses nothing committed.

Everything the service publishes (checkpoints, embedding shards, index folders, manifests,
reports) is written under a temporary name in the same folder, flushed to disk, and renamed
into place; the folder is then synced too, so the rename itself survives a power cut. The
temporary name is always ``.{name}.tmp-{random}``: dot-prefixed, so folder scans skip it, and
unique, so two writers never share one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A fresh temporary name beside ``path``."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's contents (a folder's: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; on success it replaces ``path``.

    The writer may be anything that takes a path (``torch.save``, ``np.save``,
    ``faiss.write_index``, ``open``). On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it is renamed to ``path``, which must not exist.

    A published folder is never rewritten (readers may have it memory-mapped), so an existing
    ``path`` is a ``FileExistsError`` both before and after the folder is filled.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"refusing to overwrite {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                fsync_path(child)
        fsync_path(tmp)
        if path.exists():
            raise FileExistsError(f"refusing to overwrite {path}")
        os.rename(tmp, path)
        fsync_path(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
