"""Concepts: base emoji only, named by CLDR (with or without the U+FE0F selector), captions once each."""

from __future__ import annotations

import json

from tests.helpers.emoji_fakes import cldr_tables, emoji_table
from training.emoji.concepts import CldrNames, is_base, load_concepts, readable_short_name, unnamed


def _cldr() -> CldrNames:
    annotations, derived = cldr_tables()
    return CldrNames(json.dumps(annotations).encode(), json.dumps(derived).encode())


def test_variants_flags_keycaps_and_components_are_left_out():
    concepts = load_concepts(json.dumps(emoji_table()).encode(), _cldr())
    codes = [c.codepoint for c in concepts]
    assert "0023-FE0F-20E3" not in codes and "1F1EB-1F1F7" not in codes and "1F3FB" not in codes
    assert "1F3C1" in codes  # an object flag is a picture of a thing, and stays
    assert not any("1F3FB" in c for c in codes)  # skin variations are never concepts
    assert len(concepts) == 17
    assert is_base({"unified": "1F44B-1F3FC", "category": "People & Body", "subcategory": "hand"}) is False


def test_names_and_keywords_come_from_cldr_not_the_unicode_name():
    by_code = {c.codepoint: c for c in load_concepts(json.dumps(emoji_table()).encode(), _cldr())}
    assert by_code["1F603"].name == "grinning face with big eyes"  # the table says SMILING FACE WITH OPEN MOUTH
    assert by_code["2614-FE0F"].name == "umbrella with rain drops"  # CLDR's key has no U+FE0F
    assert by_code["1F645-200D-2642-FE0F"].name == "man gesturing NO"  # a sequence, from annotationsDerived
    assert by_code["1F603"].keywords == ("face", "mouth", "smile")
    assert by_code["1F46A"].linked == ("1F468-200D-1F469-200D-1F466",)


def test_captions_are_name_short_names_keywords_each_once():
    cook = {c.codepoint: c for c in load_concepts(json.dumps(emoji_table()).encode(), _cldr())}["1F468-200D-1F373"]
    assert cook.captions == ["man cook", "male cook", "chef", "man"]


def test_a_concept_cldr_does_not_name_keeps_the_tables_name():
    table = [{**emoji_table()[3], "unified": "1FAE9", "name": "FACE WITH BAGS UNDER EYES"}]
    concepts = load_concepts(json.dumps(table).encode(), _cldr())
    assert concepts[0].name == "face with bags under eyes" and concepts[0].keywords == ()
    assert unnamed(concepts, _cldr()) == ["1FAE9"]


def test_short_names_read_as_words():
    assert readable_short_name("grinning_face_with_big_eyes") == "grinning face with big eyes"
    assert readable_short_name("woman-cook") == "woman cook"
    assert readable_short_name("+1") == "+1" and readable_short_name("-1") == "-1"
