"""The built folder: manifests our readers accept, splits by family, the same bytes on every build."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from training.emoji.build import build_emoji_dataset
from training.eval_sets import manifest_pairs
from training.pairs import load_pairs
from training.sources import SourceReport, iter_manifest

SUBSET_FILES = ("train", "val", "heldout_concepts", "heldout_house", "heldout_both")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_folder_holds_every_manifest_and_drawing(fake_npm, tmp_path):
    out = tmp_path / "emoji"
    summary = build_emoji_dataset(out, "0", tmp_path / "cache", fake_npm.sources)
    assert summary == json.loads((out / "dataset.json").read_text())
    assert summary["concepts"] == 17 and summary["families"] == 12
    assert summary["images_by_house"] == {"apple": 17, "google": 17, "twitter": 17, "facebook": 15}
    assert sum(summary["concepts_by_split"].values()) == 17
    for name in (*SUBSET_FILES, "trainval", "concepts"):
        assert (out / f"{name}.jsonl").is_file()
    for name, count in summary["rows"].items():
        assert len(_rows(out / name)) == count
    facebook = {r["codepoint"] for name in ("heldout_house", "heldout_both") for r in _rows(out / f"{name}.jsonl")}
    assert facebook and not facebook & {"1F355", "1F382"}  # one the house lacks, one its package lost
    assert {r["house"] for name in ("train", "val", "heldout_concepts") for r in _rows(out / f"{name}.jsonl")} == {
        "apple",
        "google",
        "twitter",
    }


def test_no_family_straddles_a_split(fake_npm, tmp_path):
    out = tmp_path / "emoji"
    build_emoji_dataset(out, "0", tmp_path / "cache", fake_npm.sources)
    subsets_of = defaultdict(set)
    for name in SUBSET_FILES:
        for r in _rows(out / f"{name}.jsonl"):
            subsets_of[r["family"]].add(
                name.replace("heldout_house", "train").replace("heldout_both", "heldout_concepts")
            )
    assert all(len(s) == 1 for s in subsets_of.values())
    concepts = {r["codepoint"]: r for r in _rows(out / "concepts.jsonl")}
    assert {concepts[c]["family"] for c in ("1F9D1-200D-1F373", "1F468-200D-1F373", "1F469-200D-1F373")} == {"cook"}
    assert concepts["1F46A"]["family"] == concepts["1F468-200D-1F469-200D-1F466"]["family"] == "family"


def test_the_manifests_read_as_sources_training_pairs_and_evaluation_sets(fake_npm, tmp_path):
    out = tmp_path / "emoji"
    summary = build_emoji_dataset(out, "0", tmp_path / "cache", fake_npm.sources)
    report = SourceReport()
    records = list(iter_manifest(out / "train.jsonl", report))
    assert len(records) == summary["rows"]["train.jsonl"] and not report.skipped
    first = records[0]
    assert Path(first.image_path).is_file() and first.captions[0] == first.text
    assert {"house", "codepoint", "category", "family", "subset"} <= set(first.metadata)

    train, val = load_pairs(out / "trainval.jsonl", 0.0, "split", SourceReport())
    assert (len(train), len(val)) == (summary["rows"]["train.jsonl"], summary["rows"]["val.jsonl"])
    assert all(p.captions for p in train)

    for name, count in summary["rows"].items():
        if name.startswith("eval/") or name.startswith("heldout"):
            pairs = manifest_pairs(out / name)  # the CLI's default split ("test") must not empty them
            assert len(pairs) == count and pairs.skipped == {}
            assert all(Path(p).is_file() for p in pairs.images)
    assert len(manifest_pairs(out / "val.jsonl", "val")) == summary["rows"]["val.jsonl"]


def test_the_same_inputs_and_salt_give_the_same_bytes(fake_npm, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    build_emoji_dataset(first, "0", tmp_path / "cache", fake_npm.sources)
    build_emoji_dataset(second, "0", tmp_path / "other-cache", fake_npm.sources)
    build_emoji_dataset(first, "0", tmp_path / "cache", fake_npm.sources)  # a rebuild in place changes nothing
    assert _tree(first) == _tree(second)
    assert len(fake_npm.calls()) == 2  # one per cold cache


def test_another_salt_draws_other_held_out_concepts(fake_npm, tmp_path):
    splits = []
    for salt in ("0", "1", "2", "3"):
        build_emoji_dataset(tmp_path / salt, salt, tmp_path / "cache", fake_npm.sources)
        splits.append({r["codepoint"]: r["split"] for r in _rows(tmp_path / salt / "concepts.jsonl")})
        assert json.loads((tmp_path / salt / "dataset.json").read_text())["salt"] == salt
    assert len({tuple(sorted(s.items())) for s in splits}) > 1
