"""Evaluation reports the rows it left out, and refuses a set whose images are mostly missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from training.eval_sets import evaluate_pairs, manifest_pairs
from training.evaluate import MostImagesMissing, report_markdown, skipped_rows


class FakeEncoder:
    embed_dim = 4

    def encode_images(self, images):
        return np.eye(len(images), self.embed_dim, dtype=np.float32)

    def encode_texts(self, texts):
        return np.eye(len(texts), self.embed_dim, dtype=np.float32)


def _manifest(tmp_path, present: int, missing: int, extra: list[dict] | None = None):
    rows = []
    for i in range(present):
        Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "text": f"caption {i}"})
    rows += [{"image": f"gone-{i}.png", "text": f"lost {i}"} for i in range(missing)]
    rows += extra or []
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_missing_images_are_counted_in_the_report(tmp_path):
    manifest = _manifest(tmp_path, present=4, missing=1, extra=[{"image": "0.png"}, {"text": "words only"}])
    pairs = manifest_pairs(manifest)
    assert len(pairs) == 4
    assert pairs.skipped == {"missing_image": 1, "no_text": 1, "no_image": 1}
    report = evaluate_pairs(FakeEncoder(), pairs)
    assert report["pairs"] == 4 and report["skipped"] == {"missing_image": 1, "no_text": 1, "no_image": 1}
    assert "Rows skipped: missing_image 1, no_image 1, no_text 1." in report_markdown(report)


def test_a_complete_set_reports_nothing_skipped(tmp_path):
    report = evaluate_pairs(FakeEncoder(), manifest_pairs(_manifest(tmp_path, present=3, missing=0)))
    assert report["skipped"] == {} and "Rows skipped" not in report_markdown(report)


def test_rows_of_other_splits_are_not_skipped_rows(tmp_path):
    extra = [{"image": "0.png", "text": "train row", "split": "train"}, {"image": "1.png", "split": "train"}]
    pairs = manifest_pairs(_manifest(tmp_path, present=2, missing=0, extra=extra), split="test")
    assert pairs.skipped == {}


def test_a_set_with_most_images_missing_fails_with_a_clear_error(tmp_path):
    manifest = _manifest(tmp_path, present=2, missing=3)
    with pytest.raises(MostImagesMissing, match=r"3 of 5 rows of .*set\.jsonl name an image file that does not exist"):
        manifest_pairs(manifest)
    assert isinstance(MostImagesMissing("x"), ValueError)  # the CLI prints it as a one-line error


def test_half_missing_is_still_reported_not_refused():
    assert skipped_rows({"image file missing": 2}, kept=2) == {"missing_image": 2}
    with pytest.raises(MostImagesMissing):
        skipped_rows({"image file missing": 3}, kept=2)
    assert skipped_rows({"malformed JSON line": 1, "Some New Reason!": 2, "empty": 0}, kept=5) == {
        "malformed_line": 1,
        "some_new_reason": 2,
    }
