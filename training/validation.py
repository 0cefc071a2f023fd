"""Validation during fine-tuning, and scoring pairs with the starting model (noisy-pair filtering, mining)."""

from __future__ import annotations

import logging

import numpy as np

from crossmodal_kernel.encoder import Encoder
from crossmodal_kernel.images import open_image
from crossmodal_kernel.loading import LoadedModel
from training.evaluate import retrieval_metrics
from training.pairs import Pair

log = logging.getLogger(__name__)


def embed_pairs(loaded: LoadedModel, pairs: list[Pair], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    texts = [p.text for p in pairs if p.text is not None]
    if len(texts) != len(pairs):
        raise ValueError(f"{len(pairs) - len(texts)} of {len(pairs)} pairs have no caption to embed (image-only rows)")
    encoder = Encoder(loaded, batch_size=batch_size)
    img = np.concatenate(
        [
            encoder.encode_images([open_image(p.image) for p in pairs[i : i + batch_size]])
            for i in range(0, len(pairs), batch_size)
        ]
    )
    return img, encoder.encode_texts(texts)


def evaluate_recall(loaded: LoadedModel, pairs: list[Pair], batch_size: int = 64) -> dict:
    """Retrieval metrics on ``pairs``; a result with the query's exact caption counts as a hit."""
    img, txt = embed_pairs(loaded, pairs, batch_size)
    return retrieval_metrics(img, txt, list(range(len(pairs))), keys=[p.text for p in pairs])


def drop_noisy_pairs(loaded: LoadedModel, pairs: list[Pair], fraction: float) -> tuple[list[Pair], dict]:
    """Score every pair with the starting model; drop the worst ``fraction`` (see ``training.noisy``)."""
    from training.noisy import relative_scores, select_noisy

    img, txt = embed_pairs(loaded, pairs)
    report = select_noisy(relative_scores(img, txt), fraction)
    dropped = set(report.dropped)
    examples = [f"{pairs[i].image} | {pairs[i].text}" for i in report.dropped]
    log.info("dropped %d of %d pairs as likely mismatched", len(dropped), len(pairs))
    kept = [p for i, p in enumerate(pairs) if i not in dropped]
    return kept, {**report.summary(examples), "dropped_indices": report.dropped}
