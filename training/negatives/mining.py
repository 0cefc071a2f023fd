"""Offline hard-negative mining with FAISS, and a batch sampler that puts the mined pairs together.

In-batch negatives are random: with a batch of 64 from a large corpus, an
anchor's confusable neighbours are almost never in its batch. Mining once (or
once per few epochs) with the current model finds them; the sampler then
composes batches so each anchor meets its mined negatives as ordinary
in-batch negatives, with no change to the loss. This is ANCE-style static
mining (Xiong et al., ICLR 2021) with positive-aware filtering (Moreira et al.,
"NV-Retriever", 2024).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence

import faiss
import numpy as np
import torch

log = logging.getLogger(__name__)


def mine_hard_negatives(
    anchor_emb: np.ndarray,
    candidate_emb: np.ndarray,
    positives: Mapping[int, Collection[int]] | None = None,
    *,
    anchor_keys: Sequence[Hashable] | None = None,
    candidate_keys: Sequence[Hashable] | None = None,
    k: int = 8,
    margin: float | None = 0.05,
    band: tuple[float, float] = (-1.0, 1.0),
    index_factory: str = "Flat",
    nprobe: int = 16,
    batch_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[int]]:
    """Each anchor's ``k`` most similar candidates that are not its matches, hardest first.

    Scores are cosine similarities (both sides are L2-normalised here, on a
    float32 copy). A candidate j is a match of anchor i, never a negative, when
    j is in ``positives[i]`` or ``candidate_keys[j] == anchor_keys[i]`` (e.g. the
    caption string: every image with the same caption is a match). Of the rest,
    a candidate is kept when

    - its score lies in ``band = (lo, hi)``, both ends included: ``hi`` < 1 drops
      near-duplicates outright, ``lo`` keeps out negatives too easy to matter;
    - its score is at most ``min(match scores) - margin``: a candidate that scores
      as high as the anchor's weakest match is more likely an unlabelled match
      than a negative (NV-Retriever's TopK-MarginPos, which ablates an absolute
      margin of 0.05; ``None`` disables it, as does an anchor with no matches).

    Search is exact by default (``IndexFlatIP``); ``index_factory`` takes any
    FAISS factory string, e.g. ``"IVF4096,Flat"`` for millions of candidates,
    searched with ``nprobe`` lists. Anchors go in chunks of ``batch_size``; the
    search depth doubles for those whose first hits were mostly filtered out,
    until they have ``k`` or the candidates run out.

    Returns:
        ``mined[i]``: candidate indices, most similar first; fewer than ``k``
        when not enough candidates pass the filters.
    """
    xq, xb = _normalised(anchor_emb, "anchor_emb"), _normalised(candidate_emb, "candidate_emb")
    if xq.shape[1] != xb.shape[1]:
        raise ValueError(f"anchor_emb and candidate_emb dimensions differ: {xq.shape[1]} vs {xb.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(band) != 2 or not band[0] <= band[1]:
        raise ValueError(f"band must be (lo, hi) with lo <= hi, got {band}")
    if (anchor_keys is None) != (candidate_keys is None):
        raise ValueError("anchor_keys and candidate_keys go together")
    if (
        anchor_keys is not None
        and candidate_keys is not None
        and (len(anchor_keys) != len(xq) or len(candidate_keys) != len(xb))
    ):
        raise ValueError("need one key per anchor and one per candidate")

    matches = _matches(len(xq), positives, anchor_keys, candidate_keys)
    index = _build_index(xb, index_factory, nprobe)
    mined: list[list[int]] = [[] for _ in range(len(xq))]
    for start in range(0, len(xq), batch_size):
        pending = list(range(start, min(start + batch_size, len(xq))))
        # Deep enough that matches alone cannot crowd out the k we want.
        depth = min(len(xb), 2 * k + max((len(matches[i]) for i in pending), default=0))
        while pending:
            scores, ids = index.search(xq[pending], depth)
            unfinished = []
            for row, i in enumerate(pending):
                mined[i], exhausted = _filter(xq[i], xb, scores[row], ids[row], matches[i], k, margin, band)
                if len(mined[i]) < k and not exhausted and depth < len(xb):
                    unfinished.append(i)
            pending, depth = unfinished, min(len(xb), 2 * depth)
        if progress is not None:
            progress(min(start + batch_size, len(xq)), len(xq))
    return mined


def _normalised(x: np.ndarray, name: str) -> np.ndarray:
    x = np.array(x, dtype=np.float32, copy=True, order="C")
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {x.shape}")
    faiss.normalize_L2(x)
    return x


def _matches(n, positives, anchor_keys, candidate_keys) -> list[set[int]]:
    matches = [set(positives.get(i, ())) if positives else set() for i in range(n)]
    if anchor_keys is not None:
        by_key = defaultdict(list)
        for j, key in enumerate(candidate_keys):
            by_key[key].append(j)
        for i, key in enumerate(anchor_keys):
            matches[i].update(by_key.get(key, ()))
    return matches


def _build_index(xb: np.ndarray, factory: str, nprobe: int) -> faiss.Index:
    log.info("mining index %r over %d x %d candidates, ~%.1f MiB", factory, *xb.shape, xb.nbytes / 2**20)
    index = faiss.index_factory(xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(xb)
    index.add(xb)
    if "IVF" in factory:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    return index


def _filter(q, xb, scores, ids, matched, k, margin, band) -> tuple[list[int], bool]:
    """Keep hits (sorted by score) that pass the filters; also say whether the list ran out."""
    lo, ceiling = band
    if margin is not None and matched:
        ceiling = min(ceiling, float(np.min(xb[sorted(matched)] @ q)) - margin)
    kept: list[int] = []
    for score, j in zip(scores, ids, strict=True):
        if j < 0 or score < lo:  # no more hits, or all the rest are too easy
            return kept, True
        if j in matched or score > ceiling:
            continue
        kept.append(int(j))
        if len(kept) == k:
            break
    return kept, False


class HardNegativeBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches in which each anchor tends to meet its mined negatives, reshuffled per epoch.

    ``mined[i]`` lists dataset indices that are hard negatives for item i (e.g.
    :func:`mine_hard_negatives` with the dataset's texts as anchors and its
    images as candidates, both indexed by pair). Greedy composition: walk the
    items in a (seed, epoch) permutation; each item not yet placed opens a group
    with its still-unplaced mined negatives (at most ``per_anchor``, hardest
    first) and the group fills the current batch; a group that does not fit is
    cut, and its remainder waits for a later batch. Every index is yielded once
    per epoch; all batches are full except possibly the last, which
    ``drop_last`` removes (then those few items sit the epoch out). Use with
    ``DataLoader(dataset, batch_sampler=sampler)``; call ``set_epoch`` each
    epoch. ``start`` skips that many batches, to resume mid-epoch.
    """

    def __init__(
        self,
        mined: Sequence[Sequence[int]],
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        per_anchor: int | None = None,
        start: int = 0,
    ) -> None:
        n = len(mined)
        if batch_size < 1 or n < 1:
            raise ValueError(f"need batch_size >= 1 and a non-empty dataset, got {batch_size} and {n}")
        if any(not 0 <= j < n for negatives in mined for j in negatives):
            raise ValueError(f"mined negatives must be dataset indices in [0, {n})")
        self.mined, self.batch_size, self.seed, self.epoch = mined, batch_size, seed, epoch
        self.drop_last, self.per_anchor, self.start = drop_last, per_anchor, start

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        n = len(self.mined)
        placed = np.zeros(n, dtype=bool)
        batches: list[list[int]] = []
        batch: list[int] = []
        for anchor in np.random.default_rng([self.seed, self.epoch]).permutation(n).tolist():
            if placed[anchor]:
                continue
            group = [anchor] + [j for j in dict.fromkeys(self.mined[anchor]) if j != anchor and not placed[j]]
            if self.per_anchor is not None:
                group = group[: 1 + self.per_anchor]
            for j in group[: self.batch_size - len(batch)]:
                placed[j] = True
                batch.append(j)
            if len(batch) == self.batch_size:
                batches.append(batch)
                batch = []
        if batch and not self.drop_last:
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start :]

    def __len__(self) -> int:
        n = len(self.mined)
        full = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return max(0, full - self.start)
