"""Emoji concepts: emoji-datasource's table, named and described by Unicode CLDR.

A concept is one base emoji: one codepoint sequence, drawn once by each design house. What
is left out, and why:

- skin-tone variants (``skin_variations`` in the table, never top-level rows): the same drawing
  recoloured, so they would be near-duplicate concepts with names that differ only in a tone;
- country and subdivision flags (``Flags``: ``country-flag``, ``subdivision-flag``): 262 coloured
  rectangles named after places, a geography quiz rather than a picture-to-word task; the eight
  object flags (chequered, pirate, rainbow, white...) are pictures of things and stay;
- keycaps (``keycap``): a digit in a box, and Facebook draws none of them;
- components (``Component``: the skin-tone swatches; regional indicators are not top-level rows).

The English name is CLDR's short name (``tts``, e.g. "grinning face with big eyes", "man cook"),
not the Unicode character name in the table ("SMILING FACE WITH OPEN MOUTH"): CLDR names are
the ones people read in emoji pickers, and its keywords ("cheerful", "grin", "teeth") are the
words they search with. Single characters are in ``annotations``, sequences (ZWJ, flags) in
``annotationsDerived``; both are keyed by the emoji string, often without the U+FE0F selector.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

HOUSE_NAMES = ("apple", "google", "twitter", "facebook")
EXCLUDED_CATEGORIES = frozenset({"Component"})
EXCLUDED_SUBCATEGORIES = frozenset({"country-flag", "subdivision-flag", "keycap", "skin-tone"})
# Code points that mark a variant or a component wherever they appear in a sequence.
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
REGIONAL_INDICATORS = frozenset(range(0x1F1E6, 0x1F200))
KEYCAP = 0x20E3
VARIATION_SELECTOR = "\ufe0f"


@dataclass(frozen=True)
class Concept:
    """One base emoji with its words; ``family`` is filled in by :func:`training.emoji.families.assign`."""

    codepoint: str  # emoji-datasource's ``unified``, e.g. "1F468-200D-1F373"
    name: str  # CLDR short name, e.g. "man cook"
    short_names: tuple[str, ...]
    keywords: tuple[str, ...]
    category: str
    subcategory: str
    sort_order: int
    image: str  # file name under img/<house>/64/
    houses: tuple[str, ...]  # the houses that draw it
    linked: tuple[str, ...] = ()  # codepoints it obsoletes or is obsoleted by (same drawing in some sets)
    family: str = field(default="")

    @property
    def captions(self) -> list[str]:
        """Name, short names, keywords: each wording once (case-insensitively), in that order."""
        seen: dict[str, str] = {}
        for text in (self.name, *self.short_names, *self.keywords):
            text = " ".join(text.split())
            if text and text.lower() not in seen:
                seen[text.lower()] = text
        return list(seen.values())


def emoji_string(unified: str) -> str:
    """``"1F468-200D-1F373"`` -> the characters themselves."""
    return "".join(chr(int(part, 16)) for part in unified.split("-"))


def is_base(row: Mapping) -> bool:
    """A top-level emoji-datasource row that is a concept (see the module docstring)."""
    if row.get("category") in EXCLUDED_CATEGORIES or row.get("subcategory") in EXCLUDED_SUBCATEGORIES:
        return False
    points = {int(part, 16) for part in str(row["unified"]).split("-")}
    return not (points & SKIN_TONES or points & REGIONAL_INDICATORS or KEYCAP in points)


def readable_short_name(short_name: str) -> str:
    """``"grinning_face_with_big_eyes"`` -> ``"grinning face with big eyes"``; ``"woman-cook"`` ->
    ``"woman cook"``; a leading sign stays (``"+1"``, ``"-1"``)."""
    head, body = (short_name[0], short_name[1:]) if short_name[:1] in "+-" else ("", short_name)
    return head + body.replace("_", " ").replace("-", " ")


class CldrNames:
    """CLDR's English ``tts`` name and ``default`` keywords for an emoji string."""

    def __init__(self, annotations: bytes, derived: bytes):
        self.table: dict[str, dict] = {}
        self.table.update(json.loads(derived)["annotationsDerived"]["annotations"])
        self.table.update(json.loads(annotations)["annotations"]["annotations"])  # single characters win

    def lookup(self, unified: str) -> tuple[str, tuple[str, ...]] | None:
        """``(name, keywords)``, trying the fully-qualified string, then without U+FE0F."""
        text = emoji_string(unified)
        entry = self.table.get(text) or self.table.get(text.replace(VARIATION_SELECTOR, ""))
        if not entry or not entry.get("tts"):
            return None
        return entry["tts"][0], tuple(entry.get("default", ()))


def load_concepts(emoji_json: bytes, cldr: CldrNames, houses: Sequence[str] = HOUSE_NAMES) -> list[Concept]:
    """The base concepts of emoji-datasource's ``emoji.json``, in its ``sort_order``.

    A concept CLDR does not name keeps the table's name, lower-cased (none does for Emoji 16.0
    with CLDR 47; the count is in ``unnamed`` of the build's summary).
    """
    concepts = []
    for row in json.loads(emoji_json):
        if not is_base(row):
            continue
        named = cldr.lookup(row["unified"])
        name, keywords = named if named else (str(row["name"]).lower(), ())
        links = tuple(str(u) for u in (row.get("obsoletes"), row.get("obsoleted_by")) if u)
        concepts.append(
            Concept(
                codepoint=row["unified"],
                name=name,
                short_names=tuple(readable_short_name(s) for s in row.get("short_names") or ()),
                keywords=keywords,
                category=row["category"],
                subcategory=row.get("subcategory") or "",
                sort_order=int(row.get("sort_order", 0)),
                image=row["image"],
                houses=tuple(h for h in houses if row.get(f"has_img_{h}")),
                linked=links,
            )
        )
    return sorted(concepts, key=lambda c: (c.sort_order, c.codepoint))


def unnamed(concepts: Sequence[Concept], cldr: CldrNames) -> list[str]:
    """Codepoints CLDR has no name for (their names came from the table instead)."""
    return [c.codepoint for c in concepts if cldr.lookup(c.codepoint) is None]
