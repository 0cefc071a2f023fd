"""Deterministic splits of the emoji concepts, by family and by a salt.

Why by family: see :mod:`training.emoji.families`. Why a salt: one split is one draw of which
concepts are hard to transfer to; a figure is only worth quoting with its spread over several
salts (another salt alone moves held-out R@1 by several points), and a fixed default keeps the
figures everyone quotes on the same draw.

Each family gets a rank from a hash of ``(salt, family id)``. Within each category, families
are taken in rank order into the held-out side whenever that brings the held-out concept count
closer to ``heldout_fraction`` of the category; the same pass over the remaining families fills
validation to ``val_fraction`` of what is left. Stratifying by category keeps every salt's
held-out set a similar mix (faces, animals, objects, people...), so salts differ in which
concepts, not in what kind; filling by concept count, not family count, keeps the 30-member
"family" family from skewing a fraction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from training.emoji.concepts import Concept
from training.emoji.families import members

DEFAULT_SALT = "0"
HELDOUT_FRACTION = 0.3
VAL_FRACTION = 0.1
TRAIN, VAL, HELDOUT = "train", "val", "heldout"


def rank(salt: str, family: str) -> int:
    """The family's place in the salt's order: a 64-bit hash, the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(f"{salt}\0{family}".encode(), digest_size=8).digest(), "big")


def split_families(
    concepts: Sequence[Concept],
    salt: str = DEFAULT_SALT,
    heldout_fraction: float = HELDOUT_FRACTION,
    val_fraction: float = VAL_FRACTION,
) -> dict[str, str]:
    """Family id -> ``"train"``, ``"val"`` or ``"heldout"`` (the method is in the module docstring)."""
    if not 0.0 <= heldout_fraction < 1.0 or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"fractions must be in [0, 1): heldout {heldout_fraction}, val {val_fraction}")
    by_category: dict[str, list[tuple[str, int]]] = {}
    for family, group in members(concepts).items():
        by_category.setdefault(group[0].category, []).append((family, len(group)))
    out: dict[str, str] = {}
    for category in sorted(by_category):
        families = sorted(by_category[category], key=lambda fs: (rank(salt, fs[0]), fs[0]))
        heldout = _fill(families, heldout_fraction * sum(n for _, n in families))
        rest = [fs for fs in families if fs[0] not in heldout]
        val = _fill(rest, val_fraction * sum(n for _, n in rest))
        for family, _ in families:
            out[family] = HELDOUT if family in heldout else VAL if family in val else TRAIN
    return out


def _fill(families: Sequence[tuple[str, int]], target: float) -> set[str]:
    """Families taken in order whenever one brings the taken concept count closer to ``target``."""
    taken: set[str] = set()
    count = 0
    for family, size in families:
        if abs(count + size - target) < abs(count - target):
            taken.add(family)
            count += size
    return taken
