"""Batch-embed items into shards: images decoded in DataLoader workers, texts in batches.

Plain functions: the caller (``app``) decides which items need embedding and
records the outcome; here we only turn ``(id, image path)`` / ``(id, text)``
pairs into shards and say which images could not be read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from index.shards import write_shard
from training.data import ImageFiles, collate_images, worker_context

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class EmbedReport:
    embedded: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # item id -> reason
    shards: list[Path] = field(default_factory=list)


def embed_images(
    encoder,
    items: Sequence[tuple[int, str]],
    out_dir: Path,
    *,
    batch_size: int = 64,
    num_workers: int = 2,
    shard_size: int = 8192,
    max_pixels: int | None = 100_000_000,
    progress: Progress | None = None,
) -> EmbedReport:
    """Embed ``(item id, image path)`` pairs into shards under ``out_dir``.

    Unreadable images are reported in ``EmbedReport.failed`` and skipped.
    A shard is flushed every ``shard_size`` vectors, so a crash loses at most that many.
    """
    report = EmbedReport()
    if not items:
        return report
    loader = DataLoader(
        ImageFiles(items, encoder.preprocess, max_pixels),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_images,
        persistent_workers=False,
        multiprocessing_context=worker_context(num_workers),
    )
    buf_ids: list[np.ndarray] = []
    buf_x: list[np.ndarray] = []
    buffered = done = 0

    def flush() -> None:
        nonlocal buffered
        if buffered:
            report.shards.append(write_shard(out_dir, np.concatenate(buf_ids), np.concatenate(buf_x)))
            buf_ids.clear()
            buf_x.clear()
            buffered = 0

    for ids, tensors, bad in loader:
        report.failed.update(bad)
        if tensors is not None:
            buf_ids.append(ids)
            buf_x.append(encoder.encode_image_tensors(tensors))
            buffered += len(ids)
            report.embedded += len(ids)
        done += len(ids) + len(bad)
        if buffered >= shard_size:
            flush()
        if progress:
            progress(done, len(items))
    flush()
    return report


def embed_texts(
    encoder,
    items: Sequence[tuple[int, str]],
    out_dir: Path,
    *,
    batch_size: int = 256,
    shard_size: int = 8192,
    progress: Progress | None = None,
) -> EmbedReport:
    """Embed ``(item id, text)`` pairs into shards under ``out_dir``."""
    report = EmbedReport()
    for start in range(0, len(items), shard_size):
        chunk = items[start : start + shard_size]
        parts = []
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b : b + batch_size]
            parts.append(encoder.encode_texts([t for _, t in batch]))
            if progress:
                progress(start + b + len(batch), len(items))
        ids = np.array([i for i, _ in chunk], dtype=np.int64)
        report.shards.append(write_shard(out_dir, ids, np.concatenate(parts)))
        report.embedded += len(chunk)
    return report
