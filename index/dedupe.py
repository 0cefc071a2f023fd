"""Near-duplicate removal over ranked hits: a hit goes when it is too close to a better one kept."""

from __future__ import annotations

import numpy as np

# Hits compared per request at most (the greedy pass is O(n * kept) vector products).
MAX_DEDUPE = 4096


def near_duplicates(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """A keep-mask over ``vectors`` (rows best first): row i is kept unless its cosine similarity
    to an earlier kept row is at least ``threshold``. The best of each group of near-copies stays."""
    vectors = np.asarray(vectors, dtype=np.float32)
    # stored vectors are unit length only up to their storage precision (float16 shards, SQ, PQ)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if len(vectors) > MAX_DEDUPE:
        raise ValueError(f"at most {MAX_DEDUPE} hits can be de-duplicated at once, got {len(vectors)}")
    keep = np.zeros(len(vectors), dtype=bool)
    kept: list[int] = []
    for i, v in enumerate(vectors):
        if not kept or float(np.max(vectors[kept] @ v)) < threshold:
            keep[i] = True
            kept.append(i)
    return keep
