"""Varied captions and the shift split: correct descriptions, deterministic, and held out from training."""

import hashlib
import itertools
import json
import re
from dataclasses import asdict

import numpy as np
import pytest

from training.synthetic.binding import PairScene, generate_binding_dataset, sample_pair
from training.synthetic.captions import (
    CANONICAL,
    PAIRS_WORLD,
    SHAPES_WORLD,
    Phrasing,
    draw_phrasing,
    mentions,
    paraphrase,
    phrase,
    scene_attributes,
    scene_key,
)
from training.synthetic.shapes import COLOURS, POSITIONS, SHAPES, SIZES, Scene, generate_dataset, render, sample_scene
from training.synthetic.shift import SHIFT_STYLE, TRAIN_STYLE, generate_shift_dataset, render_shifted

ATTRIBUTES = ("colour", "shape", "size", "position")
ALL_SCENES = [Scene(*v) for v in itertools.product(COLOURS, SHAPES, SIZES, POSITIONS)]


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def _phrases(vocab) -> set[str]:
    return {p for values in vocab.phrases.values() for options in values.values() for p in options}


def _every_caption(vocab, scene_values):
    """Every template with every synonym of every slot (in a few combinations), for one scene."""
    for t in range(len(vocab.templates)):
        n = len(vocab.slots(t))
        for k, stride in itertools.product(range(4), (0, 1)):  # every phrase appears; neighbours vary
            yield phrase(scene_values, vocab, Phrasing(t, tuple((k + stride * j) % 4 for j in range(n))))


@pytest.mark.parametrize("world", [SHAPES_WORLD, PAIRS_WORLD], ids=["shapes", "pairs"])
def test_the_shift_pool_shares_no_template_and_no_phrase_with_the_training_pool(world):
    train, shift = world["train"], world["shift"]
    assert not set(train.templates) & set(shift.templates)
    for attribute in train.phrases:
        assert set(train.phrases[attribute]) == set(shift.phrases[attribute])  # the same values...
        for value in train.phrases[attribute]:  # ...worded apart, also ignoring hyphens and "centre"
            norm = {p.replace("-", " ").replace("centre", "center") for p in train.phrases[attribute][value]}
            assert not norm & {p.replace("-", " ").replace("centre", "center") for p in shift.phrases[attribute][value]}
    assert not _phrases(train) & _phrases(shift)


def _template_words(vocab) -> set[str]:
    """The fixed text of the templates, in pieces of two words or more ("there is a", "one can see a")."""
    pieces = {re.sub(r"\s+", " ", piece.strip(" ,:")) for t in vocab.templates for piece in re.split(r"\{\w+\}", t)}
    return {p for p in pieces if len(p.split()) >= 2}


def test_no_training_caption_mentions_a_shift_phrase_and_no_shift_caption_a_training_one():
    for scene in ALL_SCENES[::7]:
        for own, other in (("train", "shift"), ("shift", "train")):
            fixed = _template_words(SHAPES_WORLD[other])
            for caption in _every_caption(SHAPES_WORLD[own], asdict(scene)):
                assert all(not mentions(caption, a, SHAPES_WORLD[other]) for a in ATTRIBUTES), caption
                assert not any(piece in caption for piece in fixed), caption


def test_render_styles_are_disjoint():
    assert not set(TRAIN_STYLE.backgrounds) & set(SHIFT_STYLE.backgrounds)
    for field in ("outline_px", "rotation_deg", "blur_px", "scale"):
        lo_t, hi_t = getattr(TRAIN_STYLE, field)
        lo_s, hi_s = getattr(SHIFT_STYLE, field)
        assert hi_t < lo_s or hi_s < lo_t, field
    # Sizes stay ordered under the shift's scale: the largest small object is smaller than the smallest large one.
    from training.synthetic.shapes import _RADII

    assert _RADII["small"] * SHIFT_STYLE.scale[1] < _RADII["large"] * SHIFT_STYLE.scale[0]


@pytest.mark.parametrize("pool", ["train", "shift"])
def test_every_wording_of_every_scene_names_its_colour_shape_size_and_position(pool):
    vocab = SHAPES_WORLD[pool]
    for scene in ALL_SCENES:
        for caption in _every_caption(vocab, asdict(scene)):
            for attribute in ATTRIBUTES:
                assert mentions(caption, attribute, vocab) == {getattr(scene, attribute)}, (caption, attribute)
            assert " a a" not in caption and "a e" not in caption.replace("an e", "")  # articles agree


def test_pair_wordings_name_both_objects():
    for pool in ("train", "shift"):
        vocab = PAIRS_WORLD[pool]
        for seed in range(60):
            scene = sample_pair(np.random.default_rng(seed))
            for caption in _every_caption(vocab, scene.__dict__):
                assert mentions(caption, "colour", vocab) == {scene.left_colour, scene.right_colour}, caption
                assert mentions(caption, "shape", vocab) == {scene.left_shape, scene.right_shape}, caption


def test_the_first_training_wording_is_the_canonical_caption():
    for scene in ALL_SCENES:
        assert phrase(asdict(scene), SHAPES_WORLD["train"], CANONICAL) == scene.caption()
    for seed in range(20):  # the binding world's canonical caption keeps its historic "a orange"
        pair = sample_pair(np.random.default_rng(seed))
        canonical = re.sub(r"\ba o", "an o", PairScene(**pair.__dict__).caption())
        assert phrase(pair.__dict__, PAIRS_WORLD["train"], CANONICAL) == canonical


def test_paraphrase_is_deterministic_by_seed_and_a_no_op_without_a_world():
    scene = asdict(Scene("red", "circle", "large", "top left"))
    draws = [paraphrase(scene, np.random.default_rng(s)) for s in range(30)]
    assert draws == [paraphrase(scene, np.random.default_rng(s)) for s in range(30)]
    assert len(set(draws)) > 10
    assert paraphrase({"colour": "teal", "shape": "circle", "size": "large", "position": "top left"}, None) is None
    assert paraphrase({"colour": "red"}, None) is None
    assert scene_attributes({"text": "x", "split": "train", **scene}) == tuple(scene.items())
    assert scene_key({"text": "a dog"}) == "a dog"


def test_phrasings_draw_the_same_from_numpy_and_stdlib_generators():
    import random

    p = draw_phrasing(SHAPES_WORLD["train"], random.Random(3))
    assert p == draw_phrasing(SHAPES_WORLD["train"], random.Random(3))
    assert 0 <= p.template < len(SHAPES_WORLD["train"].templates)


def test_varied_captions_are_opt_in_deterministic_and_keep_the_images(tmp_path):
    canonical = generate_dataset(tmp_path / "c", n=30, seed=0, image_size=32)
    varied = generate_dataset(tmp_path / "v", n=30, seed=0, image_size=32, captions="varied", n_captions=3)
    again = generate_dataset(tmp_path / "v2", n=30, seed=0, image_size=32, captions="varied", n_captions=3)
    assert _digest(varied.root) == _digest(again.root)
    a, b = _digest(canonical.root), _digest(varied.root)
    assert all(a[k] == b[k] for k in a if k.startswith("images/"))
    assert "captions" not in json.loads((canonical.root / "dataset.json").read_text())
    assert "captions" not in canonical.rows()[0]
    texts = [r["text"] for r in varied.rows()]
    assert texts != [r["text"] for r in canonical.rows()] and len(set(texts)) > 20
    for row in varied.rows():
        captions = json.loads(row["captions"])
        assert captions[0] == row["text"] and 1 <= len(captions) <= 3 and len(set(captions)) == len(captions)
        for caption in captions:
            assert all(mentions(caption, a, SHAPES_WORLD["train"]) == {row[a]} for a in ATTRIBUTES), caption
    for hard in varied.hard_rows():  # the distractor is worded like its caption, one attribute swapped
        assert mentions(hard["distractor"], hard["swapped"], SHAPES_WORLD["train"]) != mentions(
            hard["text"], hard["swapped"], SHAPES_WORLD["train"]
        )
    with pytest.raises(ValueError):
        generate_dataset(tmp_path / "x", n=5, captions="poetic")
    with pytest.raises(ValueError):
        generate_dataset(tmp_path / "x", n=5, n_captions=2)


def test_varied_binding_captions(tmp_path):
    ds = generate_binding_dataset(tmp_path, n=20, seed=1, image_size=32, captions="varied", n_captions=2)
    assert len({r["text"] for r in ds.rows()}) > 10
    for row in ds.rows():
        assert mentions(row["text"], "colour", PAIRS_WORLD["train"]) == {row["left_colour"], row["right_colour"]}


def test_the_shift_split_is_deterministic_all_test_and_worded_from_the_shift_pool(tmp_path):
    ds = generate_shift_dataset(tmp_path / "a", n=15, seed=0, image_size=64, n_captions=2)
    assert _digest(ds.root) == _digest(generate_shift_dataset(tmp_path / "b", n=15, seed=0, image_size=64,
                                                              n_captions=2).root)  # fmt: skip
    other = generate_shift_dataset(tmp_path / "c", n=15, seed=1, image_size=64, n_captions=2)
    assert _digest(ds.root)["manifest.csv"] != _digest(other.root)["manifest.csv"]
    assert json.loads((ds.root / "dataset.json").read_text())["world"] == "shapes-shift"
    rows = ds.rows()
    assert {r["split"] for r in rows} == {"test"} and len(ds.hard_rows()) == 15
    for row in rows:
        for caption in json.loads(row["captions"]):
            assert all(mentions(caption, a, SHAPES_WORLD["shift"]) == {row[a]} for a in ATTRIBUTES), caption
            assert all(not mentions(caption, a, SHAPES_WORLD["train"]) for a in ATTRIBUTES), caption


def test_shift_rendering_changes_the_pixels_but_still_shows_the_colour():
    palette = np.array(list(COLOURS.values()), dtype=float)
    for seed in range(40):
        scene = sample_scene(np.random.default_rng(seed))
        shifted = np.asarray(render_shifted(scene, 96, np.random.default_rng(seed)), dtype=float)
        for plain in (render(scene, 96), render(scene, 96, np.random.default_rng(seed))):
            assert np.abs(shifted - np.asarray(plain, dtype=float)).mean() > 5, scene
        distance = np.linalg.norm(shifted.reshape(-1, 1, 3) - palette[None], axis=2)
        close = (distance < 30).sum(axis=0)
        named = list(COLOURS).index(scene.colour)
        assert close[named] > 0.001 * 96 * 96 and close.argmax() == named, scene  # small blurred crosses: ~0.2%
    a = render_shifted(Scene("red", "star", "large", "center"), 64, np.random.default_rng(1))
    assert np.array_equal(np.asarray(a), np.asarray(render_shifted(Scene("red", "star", "large", "center"), 64,
                                                                  np.random.default_rng(1))))  # fmt: skip
