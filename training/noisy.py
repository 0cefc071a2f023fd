"""Noisy-pair filtering: score every pair with the current model, drop or down-weight the worst.

A misaligned caption teaches the model the wrong thing with full confidence, and no
hyper-parameter makes up for it. The cheapest detector is the model itself: a pair
whose image and caption sit far apart in the current embedding space, relative to
the rest of the data, is likely mismatched (the CLIP-score filtering used to clean
LAION-style web data, applied here to a user's own pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class NoisyPairReport:
    scored: int
    dropped: list[int] = field(default_factory=list)  # indices into the scored pairs, worst first
    threshold: float | None = None
    scores: np.ndarray | None = None

    def summary(self, examples: Sequence[str] = ()) -> dict:
        return {
            "scored": self.scored,
            "dropped": len(self.dropped),
            "threshold": self.threshold,
            "examples": list(examples)[:20],
        }


def pair_scores(img_emb: np.ndarray, txt_emb: np.ndarray) -> np.ndarray:
    """Cosine similarity of each image to its own caption (rows are unit vectors)."""
    if img_emb.shape != txt_emb.shape:
        raise ValueError(f"image and text embeddings disagree: {img_emb.shape} vs {txt_emb.shape}")
    return np.einsum("nd,nd->n", img_emb, txt_emb)


def relative_scores(img_emb: np.ndarray, txt_emb: np.ndarray) -> np.ndarray:
    """A pair's score minus the mean score of its image with the other captions.

    Raw cosines vary with the image (some images are close to every caption); the
    margin over the image's typical caption isolates whether *this* caption fits it.
    """
    sims = img_emb @ txt_emb.T
    own = np.diag(sims)
    others = (sims.sum(axis=1) - own) / max(1, sims.shape[1] - 1)
    return own - others


def select_noisy(scores: np.ndarray, fraction: float) -> NoisyPairReport:
    """The ``fraction`` of pairs with the lowest scores (ties broken by index, deterministically)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(scores)
    k = int(round(fraction * n))
    order = np.lexsort((np.arange(n), scores))  # ascending score, then index
    dropped = order[:k].tolist()
    return NoisyPairReport(scored=n, dropped=dropped, threshold=float(scores[order[k - 1]]) if k else None,
                           scores=scores)  # fmt: skip


def down_weights(scores: np.ndarray, fraction: float, floor: float = 0.1) -> np.ndarray:
    """Per-pair weights in [floor, 1]: 1 for most, ramping down to ``floor`` over the worst ``fraction``."""
    report = select_noisy(scores, fraction)
    w = np.ones(len(scores), dtype=np.float32)
    if report.dropped:
        ranks = np.linspace(floor, 1.0, num=len(report.dropped), endpoint=False, dtype=np.float32)
        w[report.dropped] = ranks
    return w
