"""Splits: by family, by salt, near the asked fractions in every category, the same on every run."""

from __future__ import annotations

from collections import Counter

import pytest

from training.emoji.concepts import Concept
from training.emoji.splits import HELDOUT, TRAIN, VAL, split_families


def _world(n_families: int = 600) -> list[Concept]:
    """Families of 1 to 4 concepts across three categories, and one 30-concept family."""
    concepts = []
    for f in range(n_families):
        category = ("Objects", "Animals & Nature", "People & Body")[f % 3]
        for m in range(1 + f % 4):
            code = f"{f:04X}-{m}"
            concepts.append(Concept(code, f"c{f}.{m}", (), (), category, "x", len(concepts), code, (), (), f"fam{f}"))
    concepts += [
        Concept(f"F-{m}", f"family {m}", (), (), "People & Body", "family", 10_000 + m, "f", (), (), "family")
        for m in range(30)
    ]
    return concepts


def test_the_same_salt_gives_the_same_split_and_another_salt_another():
    concepts = _world()
    assert split_families(concepts, "0") == split_families(list(reversed(concepts)), "0")
    first, other = split_families(concepts, "0"), split_families(concepts, "1")
    assert sum(first[f] != other[f] for f in first) > 150


@pytest.mark.parametrize("salt", ["0", "1", "2"])
def test_fractions_hold_in_every_category_counted_in_concepts(salt):
    concepts = _world()
    splits = split_families(concepts, salt)
    for category in {c.category for c in concepts}:
        mine = [c for c in concepts if c.category == category]
        counts = Counter(splits[c.family] for c in mine)
        assert counts[HELDOUT] == pytest.approx(0.3 * len(mine), abs=3)
        assert counts[VAL] == pytest.approx(0.1 * (len(mine) - counts[HELDOUT]), abs=3)
        assert counts[TRAIN] + counts[VAL] + counts[HELDOUT] == len(mine)


def test_every_family_has_one_split():
    concepts = _world(50)
    splits = split_families(concepts, "0")
    assert set(splits) == {c.family for c in concepts} and set(splits.values()) <= {TRAIN, VAL, HELDOUT}


def test_fractions_are_checked():
    with pytest.raises(ValueError, match="fractions"):
        split_families(_world(5), "0", heldout_fraction=1.0)
