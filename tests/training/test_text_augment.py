"""Caption augmentation: off by default (batches as before), seeded per (seed, epoch, index), never empty."""

from __future__ import annotations

import json
import random

import pytest
import torch

from crossmodal_kernel.distributed import init_distributed
from crossmodal_kernel.encoder import trim_padding
from tests.helpers.training_runs import train_config
from training import resume
from training.assembly import build_parts
from training.config import TextAugmentConfig, TrainConfig
from training.pairs import Pair, PairDataset, load_pairs
from training.resume import TrainState
from training.sources import SourceReport
from training.synthetic.captions import SHAPES_WORLD, mentions
from training.synthetic.shapes import generate_dataset
from training.text_augment import TextAugmenter, pick_caption, shuffle_clauses, word_dropout
from training.trainer import _epoch_batches, finetune

ATTRIBUTES = ("colour", "shape", "size", "position")
SCENE = (("colour", "red"), ("shape", "circle"), ("size", "large"), ("position", "top left"))


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("v"), n=40, seed=0, image_size=32, captions="varied", n_captions=4)


def test_text_augmentation_is_off_by_default_and_leaves_the_checkpointed_config_as_it_was():
    cfg = TrainConfig.model_validate({"data": {"manifest": "m.csv"}})
    assert not cfg.augment.text.enabled
    assert "text" not in resume._config_json(cfg)["augment"]  # checkpoints from before it existed still resume
    on = TrainConfig.model_validate({"data": {"manifest": "m.csv"}, "augment": {"text": {"word_dropout": 0.1}}})
    assert resume._config_json(on)["augment"]["text"]["word_dropout"] == 0.1
    # Fields added later are recorded only when set, so a checkpoint with word dropout from before them resumes.
    assert resume._config_json(on)["augment"]["text"].keys() == {
        "multi_caption", "paraphrase", "shuffle_clauses", "word_dropout"
    }  # fmt: skip
    syn = TrainConfig.model_validate({"data": {"manifest": "m.csv"}, "augment": {"text": {"synonyms": 0.3}}})
    assert resume._config_json(syn)["augment"]["text"]["synonyms"] == 0.3
    with pytest.raises(ValueError):
        TextAugmentConfig(word_dropout=1.0)
    with pytest.raises(ValueError):
        TextAugmentConfig(paraphrse=0.5)


def test_default_config_batches_are_those_of_the_plain_pair_dataset(varied, tmp_path):
    """Same pixels, captions and tokens as a PairDataset without text augmentation (the code path before it)."""
    parts = build_parts(train_config(varied.manifest, tmp_path, data={"split_column": "split"}), init_distributed())
    assert parts.dataset.text_augment is None
    plain = PairDataset([Pair(p.image, p.text) for p in parts.train_pairs], parts.dataset.transform, parts.cfg.seed)
    texts = {r["id"]: r["text"] for r in varied.rows("train")}
    for epoch in (0, 1):
        state = TrainState(epoch=epoch)
        batches = list(_epoch_batches(parts, state))
        plain.epoch = epoch
        order = iter(_epoch_batches(parts, state).batch_sampler)
        for (views, tokens, captions), idx in zip(batches, order, strict=True):
            expected = [plain[i] for i in idx]
            assert captions == [e[1] for e in expected] == [parts.train_pairs[i].text for i in idx]
            assert set(captions) <= set(texts.values())
            assert torch.equal(views[0], torch.stack([e[0][0] for e in expected]))
            assert torch.equal(tokens, trim_padding(parts.model, parts.loaded.tokenizer(captions)))


def test_all_off_augmenter_is_the_identity():
    augment = TextAugmenter(TextAugmentConfig(), seed=0)
    for i in range(50):
        assert (
            augment("a small red star, in the center", ("x", "y"), SCENE, i % 3, i) == "a small red star, in the center"
        )


def test_word_dropout_never_empties_a_caption_and_keeps_word_order():
    for p in (0.3, 0.9, 0.99):
        for seed in range(300):
            rng = random.Random(seed)
            text = " ".join(f"w{k}" for k in range(1 + seed % 5))
            out = word_dropout(text, p, rng)
            assert out and all(w in text.split() for w in out.split())
            assert [text.split().index(w) for w in out.split()] == sorted(text.split().index(w) for w in out.split())
    assert word_dropout("one", 0.99, random.Random(0)) == "one"
    kept = [len(word_dropout("a b c d e f g h i j", 0.5, random.Random(s)).split()) for s in range(200)]
    assert 3.5 < sum(kept) / len(kept) < 6.5


def test_multi_caption_picks_per_seed_epoch_and_index_and_varies_across_epochs():
    captions = ("one", "two", "three", "four", "five")
    picks = [pick_caption("one", captions, 0, epoch, 7) for epoch in range(12)]
    assert picks == [pick_caption("one", captions, 0, epoch, 7) for epoch in range(12)]
    assert len(set(picks)) >= 3
    assert {pick_caption("one", captions, 0, 0, i) for i in range(40)} == set(captions)
    assert [pick_caption("one", captions, 1, e, 7) for e in range(12)] != picks
    pairs = [Pair("x.png", "one", captions)] * 3
    ds = PairDataset(
        pairs, transform=None, seed=0, text_augment=TextAugmenter(TextAugmentConfig(multi_caption=True), 0)
    )
    by_epoch = []
    for epoch in range(6):
        ds.epoch = epoch
        by_epoch.append([ds.caption(i) for i in range(3)])
    assert by_epoch == [[pick_caption("one", captions, 0, e, i) for i in range(3)] for e in range(6)]
    assert PairDataset([Pair("x.png", "solo")], None, 0, text_augment=ds.text_augment).caption(0) == "solo"


def test_paraphrase_rewords_from_the_training_pool_only_and_needs_the_scene():
    augment = TextAugmenter(TextAugmentConfig(paraphrase=1.0), seed=3)
    seen = set()
    for i in range(200):
        caption = augment("a large red circle in the top left", (), SCENE, 0, i)
        seen.add(caption)
        assert all(mentions(caption, a, SHAPES_WORLD["train"]) == {v} for a, v in SCENE)
        assert all(not mentions(caption, a, SHAPES_WORLD["shift"]) for a in ATTRIBUTES)
    assert len(seen) > 50
    assert augment("a dog on a sofa", (), (), 0, 1) == "a dog on a sofa"
    half = TextAugmenter(TextAugmentConfig(paraphrase=0.5), seed=3)
    unchanged = sum(half("CANON", (), SCENE, 0, i) == "CANON" for i in range(400))
    assert 140 < unchanged < 260


def test_clause_shuffling_keeps_every_clause():
    rng = random.Random(0)
    outs = {shuffle_clauses("a red circle, large; in the top left", rng) for _ in range(30)}
    assert len(outs) > 1
    for out in outs:
        assert sorted(out.split(", ")) == sorted(["a red circle", "large", "in the top left"])
    assert shuffle_clauses("no clauses here", rng) == "no clauses here"


def test_each_step_draws_independently_of_the_others():
    """Switching word dropout on must not change which caption is picked or how it is paraphrased."""
    captions = ("alpha beta gamma", "delta epsilon zeta", "eta theta iota")
    pick = TextAugmenter(TextAugmentConfig(multi_caption=True), seed=5)
    both = TextAugmenter(TextAugmentConfig(multi_caption=True, word_dropout=0.4), seed=5)
    for i in range(60):
        chosen = pick("alpha beta gamma", captions, (), 2, i)
        assert set(both("alpha beta gamma", captions, (), 2, i).split()) <= set(chosen.split())


def test_load_pairs_keeps_captions_and_scene_attributes(varied):
    train, val = load_pairs(varied.manifest, 0.0, "split", SourceReport())
    rows = {r["image"]: r for r in varied.rows()}
    assert len(train) == 32 and len(val) == 4
    for pair in train:
        row = next(r for k, r in rows.items() if pair.image.endswith(k))
        assert pair.captions == tuple(json.loads(row["captions"])) and pair.captions[0] == pair.text
        assert dict(pair.attributes) == {a: row[a] for a in ATTRIBUTES}


@pytest.mark.parametrize("synonyms", [False, True])
def test_training_with_text_augmentation_resumes_exactly(varied, tmp_path, synonyms):
    text = {"multi_caption": True, "paraphrase": 0.5, "shuffle_clauses": 0.3, "word_dropout": 0.1}
    if synonyms:  # WordNet substitution too, from a small database in the real format
        from tests.training.test_thesaurus import write_wordnet

        text |= {"synonyms": 0.5, "wordnet_dir": str(write_wordnet(tmp_path / "wordnet"))}
    over = {"data": {"split_column": "split"}, "augment": {"text": text}}
    straight = finetune(train_config(varied.manifest, tmp_path / "a", **over))
    calls = {"n": 0}

    def cancel_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] == 3

    cfg = train_config(varied.manifest, tmp_path / "b", **over)
    assert finetune(cfg, cancel=cancel_after_three).steps == 3
    resumed = finetune(cfg)
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)
