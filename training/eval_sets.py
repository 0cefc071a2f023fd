"""Evaluation sets any dataset can provide, and the metrics every one of them gets.

A set is image–caption pairs; with a ``distractor`` caption per pair (one attribute swapped, as
in the synthetic world's ``hard.csv``, or from a user's own manifest) it also measures binding.
Retrieval is duplicate-aware: an image whose caption equals the query's counts as a hit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmodal_kernel.images import open_image
from training.evaluate import binding_accuracy, retrieval_metrics, skipped_rows
from training.sources import SourceReport, iter_manifest

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class EvalPairs:
    images: list[str]
    texts: list[str]
    distractors: list[str] | None = None  # a wrong caption per pair, for binding
    swapped: list[str] | None = None  # which attribute each distractor changed
    skipped: dict[str, int] = field(default_factory=dict)  # rows left out, by reason (missing_image...)

    def __len__(self) -> int:
        return len(self.images)


def manifest_pairs(manifest: Path, split: str | None = None) -> EvalPairs:
    """Rows with an image and a text; only ``split`` rows when the manifest has a ``split`` column.

    ``distractor`` (and ``swapped``) columns, when every kept row has one, make a binding set.
    Rows left out are counted by reason in ``skipped``; most rows' images missing is an error
    (:func:`training.evaluate.skipped_rows`).
    """
    images, texts, distractors, swapped = [], [], [], []
    report = SourceReport()
    for rec in iter_manifest(Path(manifest), report):
        if split is not None and "split" in rec.metadata and rec.metadata["split"] != split:
            continue
        if not (rec.image_path and rec.text):
            report.skip("no text" if rec.image_path else "no image")
            continue
        images.append(rec.image_path)
        texts.append(rec.text)
        distractors.append(rec.metadata.get("distractor"))
        swapped.append(rec.metadata.get("swapped"))
    has_binding = bool(images) and all(isinstance(d, str) and d for d in distractors)
    return EvalPairs(
        images,
        texts,
        distractors if has_binding else None,
        swapped if has_binding and all(isinstance(s, str) for s in swapped) else None,
        skipped_rows(report.skipped, len(images), str(manifest)),
    )


def evaluate_pairs(encoder, pairs: EvalPairs, progress: Progress | None = None, chunk_size: int = 256) -> dict:
    """Recall@1/5/10 both ways and median rank (duplicate-aware); binding when the set has distractors."""
    if not len(pairs):
        raise ValueError("the evaluation set has no pairs with both an image and a text")
    chunks = []
    for start in range(0, len(pairs), chunk_size):
        batch = pairs.images[start : start + chunk_size]
        chunks.append(encoder.encode_images([open_image(p) for p in batch]))
        if progress:
            progress("encode images", min(start + chunk_size, len(pairs)), len(pairs))
    img = np.concatenate(chunks)
    txt = encoder.encode_texts(pairs.texts)
    report = {"pairs": len(pairs), "skipped": dict(pairs.skipped)}
    report |= retrieval_metrics(img, txt, np.arange(len(pairs)), keys=pairs.texts)
    if pairs.distractors is not None:
        report |= binding_accuracy(img, txt, encoder.encode_texts(pairs.distractors), pairs.swapped)
    return report
