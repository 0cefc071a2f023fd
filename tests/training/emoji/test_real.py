"""The real packages' concepts, families and splits, where a warm cache holds them (skipped otherwise:
no network in unit tests). The drawings are left in their tarballs here, to keep this quick."""

from __future__ import annotations

from collections import Counter

import pytest

from training.emoji import families
from training.emoji.build import CLDR_DERIVED_JSON, CLDR_JSON, EMOJI_JSON
from training.emoji.concepts import CldrNames, load_concepts, unnamed
from training.emoji.packages import Sources, default_cache_dir, fetch_packages, read_member
from training.emoji.splits import HELDOUT, TRAIN, VAL, split_families


@pytest.mark.slow
def test_the_real_concepts_families_and_splits(tmp_path, monkeypatch):
    cache, sources = default_cache_dir(), Sources()
    wanted = [sources.data, sources.cldr, sources.cldr_derived]
    missing = [p.filename for p in wanted if not (cache / p.filename).is_file()]
    if missing:
        pytest.skip(f"not in the npm cache {cache}: {', '.join(missing)}")
    monkeypatch.setenv("PATH", str(tmp_path))  # a warm cache must not need npm
    tarballs = fetch_packages(wanted, cache)
    cldr = CldrNames(
        read_member(tarballs[sources.cldr], CLDR_JSON), read_member(tarballs[sources.cldr_derived], CLDR_DERIVED_JSON)
    )
    concepts = families.assign(load_concepts(read_member(tarballs[sources.data], EMOJI_JSON), cldr))
    assert 1600 <= len(concepts) <= 1700 and unnamed(concepts, cldr) == []

    family = {c.name: c.family for c in concepts}
    assert family["man cook"] == family["woman cook"] == family["cook"] == "cook"
    assert family["family: man, woman, boy"] == family["family"] == family["family: adult, adult, child"]
    assert family["man: red hair"] == family["woman: red hair"] == family["person: red hair"] != family["man"]
    assert family["person walking: facing right"] == family["woman walking"]
    assert family["grinning face"] != family["grinning face with big eyes"]

    splits = split_families(concepts, "0")
    by_split = Counter(splits[c.family] for c in concepts)
    assert by_split[HELDOUT] / len(concepts) == pytest.approx(0.3, abs=0.01)
    assert by_split[VAL] / (by_split[VAL] + by_split[TRAIN]) == pytest.approx(0.1, abs=0.01)
