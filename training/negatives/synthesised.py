"""Extra negatives made during training: MoCHi feature mixes and NegCLIP caption perturbations.

Two independent sources, each switchable, that feed the losses' optional inputs:

- :func:`mix_hard_negatives` / :func:`batch_mixed_negatives` synthesise hard
  negatives in feature space (Kalantidis et al., NeurIPS 2020). They are
  per-query, so they go to :class:`~training.losses.HardNegativeClipLoss` as
  ``text_negatives_per_image`` / ``image_negatives_per_text``; :class:`ClipLoss`
  can take them flattened, ``extra_text_features=synth.flatten(0, 1)``, which
  makes every synthetic point a negative for every image (a superset).
- :func:`perturb_caption` / :func:`perturbation_negatives` rewrite captions so
  that the words stay and the meaning changes (Yuksekgonul et al., ICLR 2023);
  the trainer encodes them and passes them as ``extra_text_features``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from training.synthetic.shapes import COLOURS, POSITIONS, SHAPES, SIZES

# A negative this close (cosine) to the query is more likely a duplicate or a
# paraphrase of its match than a negative; MoCHi would mix it into even harder
# false negatives. 0.9 sits well above what distinct items score in a trained
# CLIP space and is the "near duplicate" level dedup pipelines use.
FALSE_NEGATIVE_THRESHOLD = 0.9
_SAME_DIRECTION = 1 - 1e-5  # cosine at which a negative counts as the positive itself


@torch.no_grad()
def mix_hard_negatives(
    query: torch.Tensor,
    negatives: torch.Tensor,
    n_hardest: int = 16,
    n_synth: int = 16,
    n_query_mix: int = 0,
    positives: torch.Tensor | None = None,
    false_negative_threshold: float | None = FALSE_NEGATIVE_THRESHOLD,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MoCHi: synthetic hard negatives, mixed from each query's hardest real ones.

    Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS
    2020, Sec. 4. For query q with eligible negatives ranked by similarity, take
    the ``n_hardest`` (their N) and synthesise

    - ``n_synth`` (their s) points normalise(a n_i + (1 - a) n_j), n_i, n_j drawn
      from the hardest, a ~ U(0, 1) (Sec. 4.1, "mixing the hardest negatives");
    - ``n_query_mix`` (their s') points normalise(b q + (1 - b) n_j), b ~ U(0, 0.5),
      so the query never dominates the mix (Sec. 4.2, "even harder negatives").

    Everything returned is detached: as in the paper, the synthetic points are
    fixed negatives and gradient reaches the query only through its logits
    against them.

    The paper picks N, s, s' in the hundreds to thousands against a 16k-65k
    MoCo queue; the defaults here are scaled to in-batch negatives (a batch of
    64 texts, optionally plus a :class:`~training.losses.FeatureQueue`), and
    query mixing is off by default as the riskier of the two.

    False-negative guard: a negative is not eligible when its cosine to the
    query exceeds ``false_negative_threshold`` (None: no limit) or when it is
    the query's positive (cosine to ``positives[i]`` of 1, which also drops
    exact duplicates of the positive, e.g. the same caption twice in a batch).
    A query left with no eligible negative gets -q for all its points: cosine
    -1, the weakest possible negative (e^-s each in the softmax).

    Args:
        query: (N, D) anchors, e.g. image features.
        negatives: (M, D) pool, e.g. the batch's text features (+ a queue).
        n_hardest: how many of the hardest eligible negatives to mix (capped at M).
        n_synth: points mixed from two hard negatives.
        n_query_mix: points mixed from the query and one hard negative.
        positives: optional (N, D); row i is query i's positive.
        false_negative_threshold: cosine above which a negative is dropped.
        generator: for reproducible draws (on the query's device).

    Returns:
        (N, n_synth + n_query_mix, D) L2-normalised, detached.
    """
    if query.ndim != 2 or negatives.ndim != 2 or query.shape[1] != negatives.shape[1]:
        raise ValueError(
            f"query and negatives must be (N, D) and (M, D), got {tuple(query.shape)}, {tuple(negatives.shape)}"
        )
    if min(n_hardest, n_synth, n_query_mix) < 0 or n_hardest == 0:
        raise ValueError("need n_hardest >= 1 and n_synth, n_query_mix >= 0")
    if positives is not None and positives.shape != query.shape:
        raise ValueError(f"positives must be {tuple(query.shape)}, got {tuple(positives.shape)}")
    q = F.normalize(query.detach(), dim=-1)
    pool = F.normalize(negatives.detach().to(q), dim=-1)
    n, device = len(q), q.device
    if len(pool) == 0:  # nothing to mix: the weakest possible negatives, as for a guarded-out query
        return -q[:, None].expand(n, n_synth + n_query_mix, -1).clone()

    similarity = q @ pool.T  # (N, M)
    eligible = torch.ones_like(similarity, dtype=torch.bool)
    if false_negative_threshold is not None:
        eligible &= similarity <= false_negative_threshold
    if positives is not None:
        eligible &= F.normalize(positives.detach().to(q), dim=-1) @ pool.T < _SAME_DIRECTION
    k = min(n_hardest, pool.shape[0])
    ranked = similarity.masked_fill(~eligible, -torch.inf).topk(k, dim=1).indices  # eligible first
    hardest = pool[ranked]  # (N, k, D)
    n_eligible = eligible.sum(dim=1).clamp(max=k)  # (N,)

    def pick(count: int) -> torch.Tensor:  # (N, count, D): uniform over each row's eligible hardest
        u = torch.rand(n, count, generator=generator, device=device)
        slot = (u * n_eligible[:, None]).long().clamp(max=k - 1)
        return torch.gather(hardest, 1, slot[..., None].expand(-1, -1, q.shape[1]))

    alpha = torch.rand(n, n_synth, 1, generator=generator, device=device, dtype=q.dtype)
    mixed = alpha * pick(n_synth) + (1 - alpha) * pick(n_synth)
    beta = 0.5 * torch.rand(n, n_query_mix, 1, generator=generator, device=device, dtype=q.dtype)
    with_query = beta * q[:, None] + (1 - beta) * pick(n_query_mix)
    synthetic = F.normalize(torch.cat([mixed, with_query], dim=1), dim=-1)
    return torch.where((n_eligible > 0)[:, None, None], synthetic, -q[:, None])


def batch_mixed_negatives(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    generator: torch.Generator | None = None,
    **options,
) -> dict[str, torch.Tensor]:
    """MoCHi in both directions over a batch of pairs, ready for ``HardNegativeClipLoss``.

    Each image mixes the batch's texts (its own caption excluded), each text the
    batch's images: ``loss(img, txt, **batch_mixed_negatives(img, txt))``.
    ``options`` are :func:`mix_hard_negatives`'s.
    """
    return {
        "text_negatives_per_image": mix_hard_negatives(
            image_features, text_features, positives=text_features, generator=generator, **options
        ),
        "image_negatives_per_text": mix_hard_negatives(
            text_features, image_features, positives=image_features, generator=generator, **options
        ),
    }


# ---------------------------------------------------------------- captions

# A vocabulary maps a word class to its senses; a sense lists interchangeable
# phrasings (synonyms), the first one canonical. A swap only ever moves to a
# *different sense*: "large" -> "big" would be a false negative.
Vocabulary = Mapping[str, Sequence[Sequence[str]]]

SYNTHETIC_VOCABULARY: dict[str, tuple[tuple[str, ...], ...]] = {
    "colour": tuple((c,) for c in COLOURS),
    "shape": tuple((s,) for s in SHAPES),
    "size": tuple((s,) for s in SIZES),
    "position": tuple(("center", "centre", "middle") if p == "center" else (p,) for p in POSITIONS),
}

# Everyday English additions. Shapes get none: "square" -> "rectangle" or
# "circle" -> "oval" may still describe the same picture.
DEFAULT_VOCABULARY: dict[str, tuple[tuple[str, ...], ...]] = {
    **SYNTHETIC_VOCABULARY,
    "colour": SYNTHETIC_VOCABULARY["colour"] + (("white",), ("grey", "gray"), ("brown",), ("cyan",)),
    "size": (("small", "little", "tiny"), ("large", "big", "huge")),
    "side": (("left",), ("right",)),
    "height": (("top",), ("bottom",)),
}

PERTURBATION_KINDS = ("swap_attribute", "swap_words", "shuffle")


def perturb_caption(
    text: str,
    rng: np.random.Generator,
    kinds: Sequence[str] = PERTURBATION_KINDS,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
) -> list[str]:
    """Hard negative captions: same words, or nearly, but a different meaning.

    After NegCLIP (Yuksekgonul et al., "When and Why Vision-Language Models
    Behave like Bags-of-Words, and What to Do About It?", ICLR 2023),
    whose perturbed captions teach a contrastive model that attributes bind to
    their objects and that word order matters. One candidate per kind:

    - ``swap_attribute``: one vocabulary word (or phrase: "top left") replaced by
      another sense of the same class ("red" -> "blue"); this is the synthetic
      world's "hard" distractor.
    - ``swap_words``: two words of the same class but different senses trade
      places ("a red circle and a blue star" -> "a blue circle and a red star");
      needs a caption with two of them.
    - ``shuffle``: word trigrams permuted (single words for captions of three
      words or fewer), a final full stop kept at the end (the ARO order
      perturbations of the same paper).

    Returns the distinct candidates, in ``kinds`` order, that differ from
    ``text`` ignoring case and spacing; kinds that do not apply give nothing.
    Deterministic given the state of ``rng``.
    """
    unknown = set(kinds) - set(PERTURBATION_KINDS)
    if unknown:
        raise ValueError(f"unknown perturbation kinds {sorted(unknown)}; expected some of {PERTURBATION_KINDS}")
    lexicon = _Lexicon.of(vocabulary)
    seen, out = {_key(text)}, []
    for kind in kinds:
        if kind == "shuffle":
            candidate = _shuffle(text, rng)
        else:
            spans = lexicon.spans(text)
            candidate = (_swap_attribute if kind == "swap_attribute" else _swap_words)(text, spans, lexicon, rng)
        if candidate is not None and _key(candidate) not in seen:
            seen.add(_key(candidate))
            out.append(candidate)
    return out


def perturbation_negatives(
    texts: Sequence[str],
    rng: np.random.Generator,
    per_caption: int = 1,
    kinds: Sequence[str] = PERTURBATION_KINDS,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
) -> list[str]:
    """Up to ``per_caption`` perturbations of each caption, as extra text negatives for a batch.

    A perturbation that reads like a caption already in the batch is dropped:
    it would be that pair's positive, so using it as a negative for every image
    (``extra_text_features``) would push the pair apart. Duplicates are dropped
    too, so the list may be shorter than ``per_caption * len(texts)``.
    """
    if per_caption < 1:
        raise ValueError(f"per_caption must be >= 1, got {per_caption}")
    taken = {_key(t) for t in texts}
    out = []
    for text in texts:
        candidates = [c for c in perturb_caption(text, rng, kinds, vocabulary) if _key(c) not in taken]
        for i in sorted(rng.permutation(len(candidates))[:per_caption]):
            taken.add(_key(candidates[i]))
            out.append(candidates[i])
    return out


def _key(text: str) -> str:
    return " ".join(text.lower().split())


class _Lexicon:
    """A vocabulary compiled to one regex; longest phrases first, so "top left" beats "top"."""

    _cache: dict[int, _Lexicon] = {}

    def __init__(self, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        self.sense_of: dict[str, tuple[str, int]] = {}
        for word_class, senses in vocabulary.items():
            for index, sense in enumerate(senses):
                for phrase in sense:
                    self.sense_of[_key(phrase)] = (word_class, index)
        phrases = sorted(self.sense_of, key=len, reverse=True)
        alternation = "|".join(r"\s+".join(map(re.escape, p.split())) for p in phrases)
        self.pattern = re.compile(rf"\b(?:{alternation})\b", re.IGNORECASE)

    @classmethod
    def of(cls, vocabulary: Vocabulary) -> _Lexicon:
        # Compiled once per vocabulary object (treated as immutable); the cache
        # holds a reference, so an id is never reused while its entry lives.
        cached = cls._cache.get(id(vocabulary))
        if cached is None:
            if len(cls._cache) >= 16:
                cls._cache.clear()
            cached = cls._cache[id(vocabulary)] = cls(vocabulary)
        return cached

    def spans(self, text: str) -> list[tuple[int, int, str, int]]:
        """(start, end, class, sense) of every vocabulary phrase in ``text``."""
        return [(m.start(), m.end(), *self.sense_of[_key(m.group())]) for m in self.pattern.finditer(text)]


def _cased_like(replacement: str, original: str) -> str:
    """``replacement`` with its first letter in the case of ``original``'s ("Red" -> "Blue")."""
    first = replacement[:1].upper() if original[:1].isupper() else replacement[:1].lower()
    return first + replacement[1:]


def _swap_attribute(text, spans, lexicon, rng) -> str | None:
    spans = [s for s in spans if len(lexicon.vocabulary[s[2]]) > 1]
    if not spans:
        return None
    start, end, word_class, sense = spans[rng.integers(len(spans))]
    others = [s for i, s in enumerate(lexicon.vocabulary[word_class]) if i != sense]
    replacement = _cased_like(others[rng.integers(len(others))][0], text[start:end])
    return text[:start] + replacement + text[end:]


def _swap_words(text, spans, lexicon, rng) -> str | None:
    pairs = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :] if a[2] == b[2] and a[3] != b[3]]
    if not pairs:
        return None
    (s1, e1, *_), (s2, e2, *_) = pairs[rng.integers(len(pairs))]
    first, second = text[s1:e1], text[s2:e2]
    return text[:s1] + _cased_like(second, first) + text[e1:s2] + _cased_like(first, second) + text[e2:]


def _shuffle(text: str, rng: np.random.Generator) -> str | None:
    body = text.rstrip()
    stop = "." if body.endswith(".") else ""
    words = body.removesuffix(".").split()
    size = 3 if len(words) > 3 else 1
    chunks = [words[i : i + size] for i in range(0, len(words), size)]
    if len(chunks) < 2:
        return None
    order = rng.permutation(len(chunks))
    if (order == np.arange(len(chunks))).all():
        order = np.roll(order, 1)  # never the identity, and no retry loop to make it so
    return " ".join(w for i in order for w in chunks[i]) + stop
