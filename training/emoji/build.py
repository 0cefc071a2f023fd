"""Build the emoji dataset folder: fetch, name, group, split, then write drawings and manifests.

The folder is a pure function of the pinned packages and the salt: the same inputs give the
same bytes in every file (rows in emoji order, JSON without timestamps or machine paths), so
two people who quote a figure on salt "0" have evaluated on the same rows. Nothing in it may
be committed or redistributed: the Apple and Facebook drawings are not licensed for that.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from crossmodal_kernel import atomic
from training.emoji import families
from training.emoji.concepts import CldrNames, Concept, load_concepts, unnamed
from training.emoji.manifests import HELDOUT_HOUSES, IMAGES_DIR, SUBSETS, TRAIN_HOUSES, image_path, write_manifests
from training.emoji.packages import Package, Sources, fetch_packages, iter_members, read_member
from training.emoji.splits import DEFAULT_SALT, HELDOUT_FRACTION, VAL_FRACTION, split_families

Progress = Callable[[str, int, int], None]  # (stage, done, total)

EMOJI_JSON = "package/emoji.json"
CLDR_JSON = "package/annotations/en/annotations.json"
CLDR_DERIVED_JSON = "package/annotationsDerived/en/annotations.json"
IMAGE_SIZE = 64


def build_emoji_dataset(
    out: Path,
    salt: str = DEFAULT_SALT,
    cache_dir: Path | None = None,
    sources: Sources | None = None,
    npm: str = "npm",
    progress: Progress | None = None,
) -> dict:
    """Write the dataset into ``out`` and return its summary (also written as ``dataset.json``)."""
    sources = sources or Sources()
    out = Path(out)
    tarballs = fetch_packages(sources.all(), cache_dir, npm, progress)
    cldr = CldrNames(
        read_member(tarballs[sources.cldr], CLDR_JSON), read_member(tarballs[sources.cldr_derived], CLDR_DERIVED_JSON)
    )
    houses = [h for h, _ in sources.houses]
    concepts = families.assign(load_concepts(read_member(tarballs[sources.data], EMOJI_JSON), cldr, houses))
    splits = split_families(concepts, salt)
    drawn = {}
    for house, package in sources.houses:
        drawn[house] = write_images(out, house, tarballs[package], concepts, progress)
    concepts = [_drawn_only(c, drawn) for c in concepts]
    counts = write_manifests(out, concepts, splits)
    summary = summarise(concepts, splits, salt, sources, counts, drawn)
    summary["unnamed"] = unnamed(concepts, cldr)
    atomic.write_text(out / "dataset.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def write_images(out: Path, house: str, tarball: Path, concepts: Sequence[Concept], progress: Progress | None) -> dict:
    """Copy the house's 64 px drawing of each concept it has (``has_img_<house>``) into
    ``out/images/<house>/``; return ``{codepoint: sha1 of the PNG}`` for those found.

    A file already holding the same bytes is left alone, so a rebuild rewrites nothing.
    """
    wanted = {f"package/img/{house}/{IMAGE_SIZE}/{c.image}": c for c in concepts if house in c.houses}
    (out / IMAGES_DIR / house).mkdir(parents=True, exist_ok=True)
    found: dict[str, str] = {}
    for member, data in iter_members(tarball, wanted):
        concept = wanted[member]
        _write_if_changed(out / image_path(house, concept), data)
        found[concept.codepoint] = hashlib.sha1(data).hexdigest()
        if progress:
            progress(f"images {house}", len(found), len(wanted))
    return found


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    tmp = atomic.temp_sibling(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _drawn_only(concept: Concept, drawn: dict[str, dict]) -> Concept:
    """The concept's houses narrowed to those whose package really held its drawing."""
    return replace(concept, houses=tuple(h for h in concept.houses if concept.codepoint in drawn.get(h, {})))


def summarise(
    concepts: Sequence[Concept],
    splits: dict[str, str],
    salt: str,
    sources: Sources,
    counts: dict[str, int],
    drawn: dict[str, dict],
) -> dict:
    """What ``dataset.json`` records: inputs, rule parameters, and counts to check a build by."""
    by_split = Counter(splits[c.family] for c in concepts)
    family_split = Counter(splits.values())
    return {
        "dataset": "emoji",
        "salt": salt,
        "packages": {p.name: _package_entry(p) for p in sources.all()},
        "image_size": IMAGE_SIZE,
        "houses": {"train": list(TRAIN_HOUSES), "heldout": list(HELDOUT_HOUSES)},
        "fractions": {"heldout": HELDOUT_FRACTION, "val": VAL_FRACTION},
        "concepts": len(concepts),
        "families": len(splits),
        "concepts_by_split": dict(sorted(by_split.items())),
        "families_by_split": dict(sorted(family_split.items())),
        "images_by_house": {h: len(d) for h, d in drawn.items()},
        "identical_drawings_by_house": {h: _identical(d) for h, d in drawn.items()},
        "subsets": {s: {"split": split, "heldout_houses": h} for s, (split, h) in SUBSETS.items()},
        "rows": dict(sorted(counts.items())),
    }


def _package_entry(package: Package) -> dict:
    return {"version": package.version, "integrity": package.integrity}


def _identical(hashes: dict[str, str]) -> list[list[str]]:
    """Groups of concepts whose drawings are byte-identical in one house (a hit rule by concept
    cannot tell them apart from the pixels; most are a legacy codepoint drawn as its successor)."""
    groups: dict[str, list[str]] = {}
    for codepoint, digest in hashes.items():
        groups.setdefault(digest, []).append(codepoint)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)
