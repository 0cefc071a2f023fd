"""Concept families: the gendered and person variants of one idea, kept on one side of every split.

Why: "man cook", "woman cook" and "cook" are three concepts drawn three near-identical ways. If
"cook" trained and "woman cook" were held out, the held-out score would measure recognising a
drawing seen in training with one word changed, not transfer to an unseen concept. So splits are
made over families, and a family is whatever the rule below puts under one key.

The rule, on the CLDR English name (lower-cased, spaces collapsed):

1. A direction is not a concept: a trailing ": facing right" is dropped ("person walking: facing
   right" -> "person walking"; a mirrored drawing of the same figure).
2. Irregular gendered sets are listed (:data:`ALIASES`): man / woman / person; boy / girl /
   child; old man / old woman / older person; prince / princess / person with crown; merman /
   mermaid / merperson; Santa Claus / Mrs. Claus / Mx Claus; men's room / women's room / restroom.
3. A name with a colon is a group or a hair style. "family: man, woman, boy", "kiss: woman, man",
   "couple with heart: man, man" are their head ("family", "kiss", "couple with heart", the same
   key as the plain "family" / "kiss" / "couple with heart"); "man: red hair", "woman: red hair",
   "person: red hair" are their tail ("red hair"). A hair style is its own family, not the plain
   person's: "man: red hair" and "man" are different concepts with different names, and merging
   every hair and role variant with "person" would make one family of a hundred.
4. A leading person word is dropped when more words follow: "woman and man", "man and woman",
   "men", "women", "people", "man", "woman", "person" ("man cook" -> "cook", "person gesturing
   NO" -> "gesturing no", "women with bunny ears" -> "with bunny ears", "woman and man holding
   hands" -> "holding hands"). Whole words only: "man's shoe" and "mango" are untouched.
5. A trailing "man", "woman" or "person" after other words is dropped ("pregnant man" ->
   "pregnant", "deaf woman" -> "deaf").

Then concepts the table links as obsoleting one another (1F46E "police officer" once drawn as
a man; 1F46A "family" once drawn as man, woman, boy) are joined whatever their keys, since some
houses still draw them alike. A family is named by the key of its first concept in emoji order,
as a slug ("cook", "gesturing-no", "red-hair", "family").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from training.emoji.concepts import Concept

ALIASES = {
    "man": "person",
    "woman": "person",
    "boy": "child",
    "girl": "child",
    "old man": "older person",
    "old woman": "older person",
    "older person": "older person",
    "prince": "royalty",
    "princess": "royalty",
    "person with crown": "royalty",
    "merman": "merperson",
    "mermaid": "merperson",
    "santa claus": "claus",
    "mrs. claus": "claus",
    "mx claus": "claus",
    "men’s room": "restroom",
    "women’s room": "restroom",
}
LEADING = ("woman and man", "man and woman", "men", "women", "people", "man", "woman", "person")
TRAILING = ("man", "woman", "person")
PERSON_WORDS = frozenset({"man", "woman", "person", "men", "women", "people"})
DIRECTION = re.compile(r":?\s*facing right$")


def family_key(name: str) -> str:
    """The family key of a CLDR name (the rule is in the module docstring)."""
    text = " ".join(name.lower().split())
    text = DIRECTION.sub("", text)
    if text in ALIASES:
        return ALIASES[text]
    if ":" in text:
        head, tail = (part.strip() for part in text.split(":", 1))
        return tail if head in PERSON_WORDS else head
    words = text.split()
    for prefix in LEADING:
        n = len(prefix.split())
        if words[:n] == prefix.split() and len(words) > n:
            words = words[n:]
            break
    if len(words) > 1 and words[-1] in TRAILING:
        words = words[:-1]
    return " ".join(words)


def slug(key: str) -> str:
    """A family id fit for a file name or a column: ``"gesturing no"`` -> ``"gesturing-no"``."""
    return re.sub(r"[^0-9a-z]+", "-", key.lower()).strip("-") or "unnamed"


def assign(concepts: Sequence[Concept]) -> list[Concept]:
    """``concepts`` with ``family`` set: same key, or linked as obsoleting one another, is one family."""
    parent = list(range(len(concepts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the earlier concept (in the given order) names the family

    first_of_key: dict[str, int] = {}
    at = {c.codepoint: i for i, c in enumerate(concepts)}
    for i, c in enumerate(concepts):
        join(i, first_of_key.setdefault(family_key(c.name), i))
        for other in c.linked:
            if other in at:
                join(i, at[other])
    return [replace(c, family=slug(family_key(concepts[root(i)].name))) for i, c in enumerate(concepts)]


def members(concepts: Sequence[Concept]) -> dict[str, list[Concept]]:
    """Family id -> its concepts, families in order of their first concept."""
    out: dict[str, list[Concept]] = {}
    for c in concepts:
        out.setdefault(c.family, []).append(c)
    return out
