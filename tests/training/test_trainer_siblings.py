"""Fine-tuning masks same-concept rows: the group column, identical texts and identical drawn captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal_kernel.distributed import init_distributed
from tests.helpers.training_runs import train_config
from training.assembly import build_parts
from training.pairs import caption_id, sibling_groups
from training.resume import TrainState
from training.step import train_step
from training.trainer import _epoch_batches

# (concept, text): rows 0/1 share a concept (two houses, one name), 2/3 share a concept under different
# texts, 4/5 share nothing but their text, 6 and 7 are alone.
ROWS = [("A", "cat face"), ("A", "cat face"), ("B", "dog"), ("B", "puppy"), ("C", "sun"), ("D", "sun"),
        ("E", "moon"), ("F", "star")]  # fmt: skip


@pytest.fixture
def manifest(tmp_path):
    lines = []
    for i, (concept, text) in enumerate(ROWS):
        Image.fromarray(np.full((8, 8, 3), 30 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "text": text, "concept": concept, "split": "train"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.jsonl"


def _captured_siblings(parts) -> list:
    seen = []
    real = parts.loss_fn.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("siblings"))
        return real(*args, **kwargs)

    parts.loss_fn.forward = spy
    batch = next(iter(_epoch_batches(parts, TrainState())))
    train_step(parts, batch, 1)
    return [seen[-1], batch]


def test_the_step_masks_concepts_texts_and_captions(manifest, tmp_path):
    cfg = train_config(manifest, tmp_path / "out", data={"split_column": "split", "group_column": "concept"},
                       optim={"batch_size": 8, "steps": 1})  # fmt: skip
    parts = build_parts(cfg, init_distributed())
    assert [p.group for p in parts.train_pairs] == [c for c, _ in ROWS]
    mask, batch = _captured_siblings(parts)
    texts = batch[2]
    concept_of = {t: c for c, t in ROWS if t not in ("sun",)}
    assert mask is not None and mask.shape == (8, 8) and not mask.diagonal().any()
    for i in range(8):
        for j in range(8):
            same_text = texts[i] == texts[j]
            same_concept = texts[i] in concept_of and concept_of.get(texts[i]) == concept_of.get(texts[j])
            assert bool(mask[i, j]) == (i != j and (same_text or same_concept)), (texts[i], texts[j])


def test_siblings_negative_passes_no_mask(manifest, tmp_path):
    cfg = train_config(manifest, tmp_path / "out", data={"split_column": "split", "group_column": "concept"},
                       optim={"batch_size": 8, "steps": 1}, loss={"siblings": "negative"})  # fmt: skip
    mask, _ = _captured_siblings(build_parts(cfg, init_distributed()))
    assert mask is None


def test_sibling_keys_are_stable_ids():
    from training.pairs import Pair

    pairs = [Pair("a", "x", group="g"), Pair("b", "y", group="g"), Pair("c", "x"), Pair("d", "z")]
    keys = sibling_groups(pairs)
    assert keys[0][0] == keys[1][0] >= 0 and keys[2][0] == keys[3][0] == -1
    assert keys[0][1] == keys[2][1] != keys[3][1]
    assert caption_id("a cat") == caption_id("a cat") >= 0 and caption_id(None) == -1
    assert torch.tensor([caption_id("a cat")]).dtype == torch.long
