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

from crossmodal_kernel.images import ImageFiles, collate_images, loader_workers, worker_context
from crossmodal_kernel.modality import Modality, as_modality
from index import shards
from index.shards import write_shard

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class EmbedReport:
    embedded: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # item id -> reason
    shards: list[Path] = field(default_factory=list)
    skipped_shards: int = 0  # already finished by an earlier run


def embed_images(
    encoder,
    items: Sequence[tuple[int, str]],
    out_dir: Path,
    *,
    num_workers: int = 2,
    shard_size: int = 8192,
    max_pixels: int | None = 100_000_000,
    progress: Progress | None = None,
    stem: str | None = None,
) -> EmbedReport:
    """Embed ``(item id, image path)`` pairs into shards under ``out_dir``.

    Images are decoded ``encoder.batch_size`` at a time by ``num_workers`` DataLoader workers.
    Unreadable images are reported in ``EmbedReport.failed`` and skipped.
    A shard is flushed every ``shard_size`` vectors, so a crash loses at most that many.
    """
    report = EmbedReport()
    if not items:
        return report
    num_workers = loader_workers(num_workers)
    loader = DataLoader(
        ImageFiles(items, encoder.preprocess, max_pixels),
        batch_size=encoder.batch_size,
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
            report.shards.append(write_shard(out_dir, np.concatenate(buf_ids), np.concatenate(buf_x), stem=stem))
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
    shard_size: int = 8192,
    progress: Progress | None = None,
    stem: str | None = None,
) -> EmbedReport:
    """Embed ``(item id, text)`` pairs into shards under ``out_dir``, ``encoder.batch_size`` at a time."""
    batch_size = encoder.batch_size
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
        report.shards.append(write_shard(out_dir, ids, np.concatenate(parts), stem=stem))
        report.embedded += len(chunk)
    return report


def plan_shards(items: Sequence[tuple[int, str]], shard_size: int) -> list[tuple[str, list[tuple[int, str]]]]:
    """Cut id-sorted items into ``(stem, chunk)`` shards named by their id range.

    The plan depends only on the items, so a restarted job (or every torchrun rank)
    computes the same one, and a shard whose file exists is known to be done.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ordered = sorted(items)
    chunks = [ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)]
    return [(f"shard-{c[0][0]:012d}-{c[-1][0]:012d}", c) for c in chunks]


def embed_sharded(
    encoder,
    items: Sequence[tuple[int, str]],
    out_dir: Path,
    modality: str,
    *,
    shard_size: int = 8192,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 2,
    progress: Progress | None = None,
) -> EmbedReport:
    """Embed a planned job: rank ``r`` of ``W`` takes shards r, r+W, …; finished shards are skipped.

    A killed job loses at most the shard in flight: each shard is written (atomically)
    as soon as it is done, and a restart finds it and moves on.
    """
    modality = as_modality(modality)
    report = EmbedReport()
    mine = plan_shards(items, shard_size)[rank::world_size]
    total = sum(len(chunk) for _, chunk in mine)
    done = 0
    for stem, chunk in mine:
        if shards.shard_exists(out_dir, stem):
            report.skipped_shards += 1
        else:
            # Batch by batch, not shard by shard: a long shard still reports (and can be cancelled) as it goes.
            within = (lambda d, _t, base=done: progress(base + d, total)) if progress else None
            size = len(chunk) + 1  # the whole chunk is one shard
            if modality == Modality.IMAGE:
                part = embed_images(
                    encoder, chunk, out_dir, num_workers=num_workers, shard_size=size, stem=stem, progress=within
                )
            else:
                part = embed_texts(encoder, chunk, out_dir, shard_size=size, stem=stem, progress=within)
            report.embedded += part.embedded
            report.failed.update(part.failed)
            report.shards.extend(part.shards)
        done += len(chunk)
        if progress:
            progress(done, total)
    return report
