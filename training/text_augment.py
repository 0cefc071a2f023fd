"""Caption augmentation for training: pick one of several captions, paraphrase, shuffle clauses, drop words.

Every draw is a pure function of ``(seed, epoch, index)``, like the image augmentation in
:class:`training.pairs.PairDataset`, so a resumed run sees the captions an uninterrupted one
would have. Each step has a generator of its own (keyed by the step's name too), so switching
one on never changes what another draws: with ``word_dropout`` added, the same caption is
still picked and paraphrased the same way.

Generic steps work on any caption: ``multi_caption`` (a pair's captions come from the
manifest's ``captions`` column, see :mod:`training.sources`), ``shuffle_clauses`` (clauses are
the parts between commas and semicolons, rejoined with ", ") and ``word_dropout`` (never
empty). ``paraphrase`` needs the pair's scene attributes (the synthetic worlds' manifest
columns) and rewords it from the *training* pool of :mod:`training.synthetic.captions`; the shift pool
stays held out. ``synonyms`` replaces words with WordNet alternatives
(:mod:`training.thesaurus`): words the text tower may not know, shown with images they describe.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from training.config import TextAugmentConfig
from training.synthetic.captions import paraphrase
from training.thesaurus import load_thesaurus

_CLAUSE = re.compile(r"\s*[,;]\s*")


def _rng(step: str, seed: int, epoch: int, index: int) -> random.Random:
    # A string seed is hashed with SHA-512 by ``random``: stable across processes and PYTHONHASHSEED.
    return random.Random(f"{step}:{seed}:{epoch}:{index}")


def pick_caption(text: str, captions: Sequence[str], seed: int, epoch: int, index: int) -> str:
    """One of ``text`` and ``captions`` (duplicates counted once), drawn per ``(seed, epoch, index)``."""
    pool = list(dict.fromkeys([text, *captions]))
    return pool[_rng("caption", seed, epoch, index).randrange(len(pool))]


def shuffle_clauses(text: str, rng: random.Random) -> str:
    """``text`` with its comma/semicolon-separated clauses in a random order (unchanged with one clause)."""
    clauses = [c for c in _CLAUSE.split(text.strip()) if c]
    if len(clauses) < 2:
        return text
    rng.shuffle(clauses)
    return ", ".join(clauses)


def word_dropout(text: str, p: float, rng: random.Random) -> str:
    """Each word of ``text`` dropped with probability ``p``; when all would go, one random word stays."""
    words = text.split()
    if not words or p <= 0:
        return text
    kept = [w for w in words if rng.random() >= p]
    return " ".join(kept) if kept else words[rng.randrange(len(words))]


class TextAugmenter:
    """The caption policy of a :class:`~training.config.TextAugmentConfig`, applied to one pair at a time."""

    def __init__(self, cfg: TextAugmentConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        # Loaded up front, so a missing WordNet fails the run before training, with how to install one.
        self.thesaurus = load_thesaurus(cfg.wordnet_dir) if cfg.synonyms else None

    def __call__(
        self, text: str, captions: Sequence[str], attributes: Sequence[tuple[str, str]], epoch: int, index: int
    ) -> str:
        cfg, key = self.cfg, (self.seed, epoch, index)
        if cfg.multi_caption and captions:
            text = pick_caption(text, captions, *key)
        if cfg.paraphrase and attributes:
            rng = _rng("paraphrase", *key)
            if rng.random() < cfg.paraphrase:
                text = paraphrase(attributes, rng, pool="train") or text
        if self.thesaurus is not None:
            text = self.thesaurus.substitute(text, cfg.synonyms, _rng("synonyms", *key))
        if cfg.shuffle_clauses:
            rng = _rng("clauses", *key)
            if rng.random() < cfg.shuffle_clauses:
                text = shuffle_clauses(text, rng)
        if cfg.word_dropout:
            text = word_dropout(text, cfg.word_dropout, _rng("dropout", *key))
        return text
