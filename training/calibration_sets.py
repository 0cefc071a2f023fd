"""The query directions of an evaluation set, as :func:`training.calibration.judge` ranks them.

An evaluation set (``training.eval_sets.EvalPairs``) holds image-caption pairs, with a concept per
pair where its manifest has a ``concept`` column. Each direction of it is a
:class:`~training.calibration.Direction`: queries, a pool, and keys (a hit is relevant when it
shares one with its query), by the set's evaluation hit rule.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.calibration import IMAGE_TO_IMAGE, IMAGE_TO_TEXT, TEXT_TO_IMAGE, TEXT_TO_TEXT, Direction
from training.eval_sets import EvalPairs, concept_texts


def direction_sets(
    pairs: EvalPairs, img: np.ndarray, encode_texts: Callable[[list[str]], np.ndarray]
) -> dict[str, Direction]:
    """Each direction of an evaluation set whose images are embedded as ``img`` (one row per pair), by the
    set's hit rule (the module docstring). Without concepts a text -> text query has no relevant text
    but itself, so that direction is left unjudgeable (no positives) and uncalibrated."""
    if pairs.concepts is not None:
        names, name_concepts, pool_texts, pool_concepts = concept_texts(pairs)
        order = list(dict.fromkeys([*names, *pool_texts]))
        emb = encode_texts(order)
        at = {t: i for i, t in enumerate(order)}
        query_text, pool_text = emb[[at[t] for t in names]], emb[[at[t] for t in pool_texts]]
        query_keys = [frozenset([c]) for c in name_concepts]
        text_keys = [frozenset(c) for c in pool_concepts]
        image_keys = [frozenset([c]) for c in pairs.concepts]
        in_pool = {t: i for i, t in enumerate(pool_texts)}
        own_text = np.array([in_pool.get(t, -1) for t in names])
    else:
        pool_texts = list(dict.fromkeys(pairs.texts))
        query_text = pool_text = encode_texts(pool_texts)
        query_keys = text_keys = [frozenset([t]) for t in pool_texts]
        image_keys = [frozenset([t]) for t in pairs.texts]
        own_text = np.arange(len(pool_texts))
    return {
        TEXT_TO_IMAGE: Direction(query_text, query_keys, img, image_keys),
        IMAGE_TO_TEXT: Direction(img, image_keys, pool_text, text_keys),
        IMAGE_TO_IMAGE: Direction(img, image_keys, img, image_keys, np.arange(len(img))),
        TEXT_TO_TEXT: Direction(query_text, query_keys, pool_text, text_keys, own_text),
    }
