"""The family rule on real CLDR names: gendered and person variants share a key, nothing else does."""

from __future__ import annotations

import pytest

from training.emoji.concepts import Concept
from training.emoji.families import assign, family_key, members, slug

# Real CLDR 47 English names, grouped as the rule must group them.
SAME_FAMILY = [
    ("cook", "man cook", "woman cook"),
    ("person gesturing NO", "man gesturing NO", "woman gesturing NO"),
    ("family", "family: man, woman, boy", "family: woman, woman, girl, girl", "family: adult, adult, child"),
    ("kiss", "kiss: woman, man", "kiss: man, man", "kiss: woman, woman"),
    ("couple with heart", "couple with heart: woman, man", "couple with heart: man, man"),
    ("man: red hair", "woman: red hair", "person: red hair"),
    ("person: beard", "man: beard", "woman: beard"),
    ("man: bald", "woman: bald", "person: bald"),
    ("person", "man", "woman"),
    ("child", "boy", "girl"),
    ("older person", "old man", "old woman"),
    ("person with crown", "prince", "princess"),
    ("merperson", "merman", "mermaid"),
    ("Santa Claus", "Mrs. Claus", "Mx Claus"),
    ("pregnant woman", "pregnant man", "pregnant person"),
    ("deaf person", "deaf man", "deaf woman"),
    ("people holding hands", "women holding hands", "woman and man holding hands", "men holding hands"),
    ("people with bunny ears", "men with bunny ears", "women with bunny ears"),
    ("people wrestling", "men wrestling", "women wrestling"),
    ("man dancing", "woman dancing"),
    ("person walking", "man walking", "person walking: facing right", "woman walking: facing right"),
    ("person in manual wheelchair", "man in manual wheelchair: facing right"),
    ("men’s room", "women’s room", "restroom"),
]
# Names the rule must keep apart (a person word inside a word, a hair style vs the plain person,
# a group vs its sign, fine-grained faces).
DIFFERENT_FAMILIES = [
    ("man", "man: red hair", "man cook"),
    ("man’s shoe", "woman’s hat", "person"),
    ("mango", "man"),
    ("kiss", "kiss mark"),
    ("family", "busts in silhouette", "people hugging"),
    ("grinning face", "grinning face with big eyes", "grinning face with smiling eyes"),
    ("right-facing fist", "left-facing fist"),
    ("baby", "child", "baby angel"),
    ("cook", "cooking"),
]


@pytest.mark.parametrize("names", SAME_FAMILY, ids=lambda names: names[0])
def test_variants_share_a_family(names):
    assert len({family_key(n) for n in names}) == 1


@pytest.mark.parametrize("names", DIFFERENT_FAMILIES, ids=lambda names: names[0])
def test_distinct_concepts_do_not(names):
    keys = [family_key(n) for n in names]
    assert len(set(keys)) == len(keys)


def test_keys_read_as_the_shared_idea():
    assert family_key("woman gesturing NO") == "gesturing no"
    assert family_key("man: red hair") == "red hair"
    assert family_key("family: man, woman, boy") == "family"
    assert slug("gesturing no") == "gesturing-no" and slug("mrs. claus") == "mrs-claus"


def _concept(code: str, name: str, linked: tuple[str, ...] = ()) -> Concept:
    return Concept(code, name, (), (), "People & Body", "person-role", 0, f"{code}.png", ("apple",), linked)


def test_a_family_is_named_by_its_first_concept_and_joins_linked_codepoints():
    concepts = assign(
        [
            _concept("1F46E", "police officer", linked=("1F46E-200D-2642-FE0F",)),
            _concept("1F46E-200D-2642-FE0F", "man police officer"),
            _concept("1F46F", "legacy bunny-ears drawing", linked=("1F46F-200D-2640-FE0F",)),
            _concept("1F46F-200D-2640-FE0F", "women with bunny ears"),
            _concept("1F9D1-200D-1F373", "cook"),
        ]
    )
    assert [c.family for c in concepts] == [
        "police-officer",
        "police-officer",
        "legacy-bunny-ears-drawing",  # joined by the obsoletes link, whatever its name says
        "legacy-bunny-ears-drawing",
        "cook",
    ]
    assert list(members(concepts)) == ["police-officer", "legacy-bunny-ears-drawing", "cook"]
