"""Caption vocabularies for the synthetic worlds: templates and synonyms, in two disjoint pools.

A caption is a template (``"a {size} {colour} {shape} {position}"``) whose slots are filled
with a phrase for the scene's attribute values (``large`` -> "large", "big" or "huge"). Each
world has two pools that share no template and no phrase:

- ``train``: what varied training captions and the trainer's ``augment.text.paraphrase`` draw
  from. Its first template and first phrases give the canonical caption
  (:meth:`training.synthetic.shapes.Scene.caption`), so canonical wording is part of it;
- ``shift``: held out for the shift split (:mod:`training.synthetic.shift`), never seen in
  training, so a model evaluated on it meets wordings it was not taught.

A :class:`Phrasing` (a template and a synonym choice per slot) is drawn once and applied to
attribute values, so a hard-split distractor is worded exactly like its true caption.
A template's slot ``left_colour`` takes its phrases from the attribute ``colour`` (the part
after the last underscore). Phrases are matched as whole words, so the pools also say what a
caption *mentions* (:func:`mentions`), which the tests use to check that a varied caption is
still a correct description.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# pool ("train" / "shift") -> attribute value -> phrases
_Pools = dict[str, dict[str, tuple[str, ...]]]

_COLOURS: _Pools = {
    "train": {"red": ("red", "crimson"), "orange": ("orange", "tangerine"), "yellow": ("yellow", "lemon"),
              "green": ("green", "emerald"), "blue": ("blue", "cobalt"), "purple": ("purple", "violet"),
              "pink": ("pink", "rose"), "black": ("black", "pitch-black")},
    "shift": {"red": ("scarlet", "cherry"), "orange": ("amber", "pumpkin"), "yellow": ("golden", "canary"),
              "green": ("jade", "verdant"), "blue": ("azure", "sapphire"), "purple": ("plum", "amethyst"),
              "pink": ("fuchsia", "magenta"), "black": ("ebony", "inky")},
}  # fmt: skip
_SHAPES: _Pools = {
    "train": {"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle", "three-sided shape"),
              "star": ("star", "five-pointed star"), "hexagon": ("hexagon", "six-sided shape"),
              "cross": ("cross", "plus sign")},
    "shift": {"circle": ("dot", "round figure"), "square": ("tile", "four-cornered figure"),
              "triangle": ("triangular figure", "wedge"), "star": ("pentagram", "starburst"),
              "hexagon": ("hexagonal figure", "honeycomb cell"), "cross": ("cruciform figure", "plus-shaped mark")},
}  # fmt: skip
_SIZES: _Pools = {
    "train": {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")},
    "shift": {"small": ("diminutive", "minuscule"), "large": ("massive", "enormous")},
}


def _corners(pool: str) -> dict[str, tuple[str, ...]]:
    """Position phrases (preposition included) for the four corners."""
    out: dict[str, tuple[str, ...]] = {}
    for vertical, upper, north in (("top", "upper", "north"), ("bottom", "lower", "south")):
        for side, east in (("left", "west"), ("right", "east")):
            at = f"{vertical} {side}"
            if pool == "train":
                out[at] = (f"in the {at}", f"in the {upper} {side}", f"at the {at}", f"in the {at} corner")
            else:
                way = "up" if vertical == "top" else "down"
                corner = f"in the {north}{east} corner"
                out[at] = (f"{way} and to the {side}", f"in the {upper}-{side} quadrant", corner)
    return out


_POSITIONS: _Pools = {
    "train": {**_corners("train"), "center": ("in the center", "in the middle", "at the centre", "in the centre")},
    "shift": {**_corners("shift"), "center": ("dead centre", "in the central area", "at the midpoint of the frame")},
}


@dataclass(frozen=True)
class Vocabulary:
    """Templates over named slots, and the phrases of each attribute value."""

    templates: tuple[str, ...]
    phrases: Mapping[str, Mapping[str, tuple[str, ...]]]  # attribute -> value -> phrases

    def slots(self, template: int) -> tuple[str, ...]:
        return tuple(name for _, name, _, _ in string.Formatter().parse(self.templates[template]) if name)


SHAPES_WORLD = {
    "train": Vocabulary(
        templates=(
            "a {size} {colour} {shape} {position}",  # canonical: Scene.caption()
            "{position} there is a {size} {colour} {shape}",
            "a {colour} {shape}, {size}, {position}",
            "a {size} {shape} coloured {colour} {position}",
            "{size} {colour} {shape} {position}",
            "a picture of a {size} {colour} {shape} {position}",
            "a {colour} {size} {shape} {position}",
        ),
        phrases={
            "colour": _COLOURS["train"],
            "shape": _SHAPES["train"],
            "size": _SIZES["train"],
            "position": _POSITIONS["train"],
        },  # fmt: skip
    ),
    "shift": Vocabulary(
        templates=(
            "{position}, one can see a {size} {colour} {shape}",
            "the image shows a {colour} {shape} that is {size}, {position}",
            "{colour} {shape}, {size} in scale, placed {position}",
            "{position} sits a {size} {colour} {shape}",
        ),
        phrases={
            "colour": _COLOURS["shift"],
            "shape": _SHAPES["shift"],
            "size": _SIZES["shift"],
            "position": _POSITIONS["shift"],
        },  # fmt: skip
    ),
}
PAIRS_WORLD = {
    "train": Vocabulary(
        templates=(
            "a {left_colour} {left_shape} to the left of a {right_colour} {right_shape}",  # PairScene.caption()
            "a {right_colour} {right_shape} to the right of a {left_colour} {left_shape}",
            "on the left a {left_colour} {left_shape}, on the right a {right_colour} {right_shape}",
            "a {left_colour} {left_shape} on the left and a {right_colour} {right_shape} on the right",
        ),
        phrases={"colour": _COLOURS["train"], "shape": _SHAPES["train"]},
    ),
    "shift": Vocabulary(
        templates=(
            "a {right_colour} {right_shape} with a {left_colour} {left_shape} on its left-hand side",
            "the left-hand object is a {left_colour} {left_shape}, the right-hand one a {right_colour} {right_shape}",
            "reading from left to right: a {left_colour} {left_shape}, then a {right_colour} {right_shape}",
        ),
        phrases={"colour": _COLOURS["shift"], "shape": _SHAPES["shift"]},
    ),
}
# Worlds by the manifest columns that describe a scene: a row holding all of one world's columns
# (with values its vocabulary knows) can be reworded; any other row is left as it is.
WORLDS: dict[tuple[str, ...], dict[str, Vocabulary]] = {
    ("colour", "shape", "size", "position"): SHAPES_WORLD,
    ("left_colour", "left_shape", "right_colour", "right_shape"): PAIRS_WORLD,
}


@dataclass(frozen=True)
class Phrasing:
    """A template and, per slot, which of the value's phrases to use (modulo their number)."""

    template: int
    choices: tuple[int, ...]


def attribute_of(slot: str) -> str:
    return slot.rsplit("_", 1)[-1]


def draw_phrasing(vocab: Vocabulary, rng: np.random.Generator | random.Random) -> Phrasing:
    """A random template and synonym choices; works with numpy and stdlib generators alike."""
    pick = rng.integers if isinstance(rng, np.random.Generator) else lambda n: rng.randrange(n)
    template = int(pick(len(vocab.templates)))
    return Phrasing(template, tuple(int(pick(1 << 16)) for _ in vocab.slots(template)))


CANONICAL = Phrasing(0, (0, 0, 0, 0))


def phrase(values: Mapping[str, str], vocab: Vocabulary, phrasing: Phrasing) -> str:
    """The caption of ``values`` (slot -> attribute value) worded by ``phrasing``."""
    fill = {}
    for slot, choice in zip(vocab.slots(phrasing.template), phrasing.choices, strict=True):
        options = vocab.phrases[attribute_of(slot)][values[slot]]
        fill[slot] = options[choice % len(options)]
    return _articles(vocab.templates[phrasing.template].format(**fill))


def _articles(text: str) -> str:
    """ "a" before a vowel becomes "an" (the vocabularies hold no "a u[niform]"-style exceptions)."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def world_of(columns: Mapping[str, object]) -> tuple[tuple[str, ...], dict[str, Vocabulary]] | None:
    """The world whose attribute columns ``columns`` all holds with known values, else ``None``."""
    for names, world in WORLDS.items():
        train = world["train"]
        if all(isinstance(columns.get(n), str) and columns[n] in train.phrases[attribute_of(n)] for n in names):
            return names, world
    return None


def scene_attributes(columns: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """The (column, value) pairs that describe a scene, when ``columns`` holds a world's; else ``()``."""
    found = world_of(columns)
    return () if found is None else tuple((n, str(columns[n])) for n in found[0])


def scene_key(row: Mapping[str, object]) -> object:
    """What makes two rows interchangeable answers in retrieval: the scene when the row describes one
    (differently worded captions of one scene match), else its ``text`` (as for canonical captions)."""
    return scene_attributes(row) or row.get("text")


def paraphrase(attributes: Sequence[tuple[str, str]] | Mapping[str, str], rng, pool: str = "train") -> str | None:
    """A random rewording of the scene described by ``attributes`` from ``pool``; ``None`` when no world fits."""
    values = dict(attributes)
    found = world_of(values)
    if found is None:
        return None
    vocab = found[1][pool]
    return phrase(values, vocab, draw_phrasing(vocab, rng))


def variants(values: Mapping[str, str], vocab: Vocabulary, rng: np.random.Generator, k: int) -> list[Phrasing]:
    """``k`` phrasings that word ``values`` differently where the pool allows (a few draws per caption)."""
    chosen: dict[str, Phrasing] = {}
    for _ in range(10 * k):
        p = draw_phrasing(vocab, rng)
        chosen.setdefault(phrase(values, vocab, p), p)
        if len(chosen) == k:
            break
    return list(chosen.values())


def worded(
    values: Mapping[str, str],
    vocab: Vocabulary | None,
    rng: np.random.Generator,
    k: int = 1,
    canonical: Callable[[Mapping[str, str]], str] | None = None,
) -> tuple[list[str], Callable[[Mapping[str, str]], str]]:
    """Captions of ``values`` and a function that words another scene like the first of them.

    Without ``vocab`` the one caption is ``canonical(values)`` (and so is the wording function).
    """
    if vocab is None:
        if canonical is None:
            raise ValueError("worded() needs `canonical` when there is no vocabulary")
        return [canonical(values)], canonical
    phrasings = variants(values, vocab, rng, k)
    return [phrase(values, vocab, p) for p in phrasings], lambda other: phrase(other, vocab, phrasings[0])


def mentions(caption: str, attribute: str, vocab: Vocabulary) -> set[str]:
    """The values of ``attribute`` whose phrases occur in ``caption`` as whole words."""
    return {
        value
        for value, options in vocab.phrases[attribute].items()
        if any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", caption) for o in options)
    }
