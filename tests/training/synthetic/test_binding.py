import json

import numpy as np
import pytest

from training.synthetic.binding import PairScene, generate_binding_dataset, render_pair, sample_pair
from training.synthetic.shapes import COLOURS


def test_swaps_keep_the_words_and_change_the_binding():
    scene = PairScene("red", "circle", "blue", "square")
    assert scene.caption() == "a red circle to the left of a blue square"
    assert scene.swapped("colour").caption() == "a blue circle to the left of a red square"
    assert scene.swapped("order").caption() == "a blue square to the left of a red circle"
    for kind in ("colour", "order"):
        assert sorted(scene.swapped(kind).caption().split()) == sorted(scene.caption().split())
    with pytest.raises(ValueError):
        scene.swapped("size")


def test_sampled_objects_differ_in_colour_and_shape():
    for i in range(200):
        s = sample_pair(np.random.default_rng(i))
        assert s.left_colour != s.right_colour and s.left_shape != s.right_shape


def test_each_colour_is_painted_on_its_own_side():
    scene = PairScene("red", "square", "blue", "square")
    img = np.asarray(render_pair(scene, 64)).astype(int)
    left, right = img[:, :32], img[:, 32:]

    def count(part, colour):
        return int((np.abs(part - np.array(COLOURS[colour])).sum(axis=2) < 60).sum())

    assert count(left, "red") > 100 and count(left, "blue") == 0
    assert count(right, "blue") > 100 and count(right, "red") == 0


def test_dataset_files_and_determinism(tmp_path):
    a = generate_binding_dataset(tmp_path / "a", n=40, seed=1, image_size=32)
    b = generate_binding_dataset(tmp_path / "b", n=40, seed=1, image_size=32)
    assert (a.root / "manifest.csv").read_bytes() == (b.root / "manifest.csv").read_bytes()
    assert (a.root / "images" / "000007.png").read_bytes() == (b.root / "images" / "000007.png").read_bytes()
    hard = a.hard_rows()
    assert len(hard) == len(a.rows("test")) and {h["swapped"] for h in hard} <= {"colour", "order"}
    assert all(h["distractor"] != h["text"] for h in hard)
    mtime = (a.root / "manifest.csv").stat().st_mtime_ns
    generate_binding_dataset(tmp_path / "a", n=40, seed=1, image_size=32)
    assert (a.root / "manifest.csv").stat().st_mtime_ns == mtime


def test_bad_parameters_and_a_smaller_regeneration(tmp_path):
    with pytest.raises(ValueError):
        generate_binding_dataset(tmp_path / "x", n=10, splits=(0.5, 0.5, 0.5))
    generate_binding_dataset(tmp_path / "d", n=12, seed=0, image_size=16)
    generate_binding_dataset(tmp_path / "d", n=8, seed=0, image_size=16)
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir())[-1] == "000007.png"


def _centre_x(img: np.ndarray, colour: str) -> float:
    mask = np.abs(img - np.array(COLOURS[colour])).sum(axis=2) < 60
    assert mask.sum() > 20, colour
    return float(np.nonzero(mask)[1].mean())


def test_free_layout_keeps_left_left_but_often_in_the_same_half():
    same_half = 0
    for i in range(60):
        rng = np.random.default_rng(i)
        scene = PairScene("red", "circle", "blue", "square")
        img = np.asarray(render_pair(scene, 96, rng, layout="free")).astype(int)
        left, right = _centre_x(img, "red"), _centre_x(img, "blue")
        assert left + 0.2 * 96 < right  # centres at least the gap apart, minus anti-aliasing slack
        same_half += (left < 48) == (right < 48)
    assert same_half >= 10  # the layout no coarse 2-cell grid can read off: both objects in one half


def test_free_layout_dataset_is_its_own_dataset(tmp_path):
    sides = generate_binding_dataset(tmp_path / "s", n=20, seed=1, image_size=32)
    free = generate_binding_dataset(tmp_path / "f", n=20, seed=1, image_size=32, layout="free")

    def params(ds):
        return json.loads((ds.root / "dataset.json").read_text())

    assert "layout" not in params(sides) and params(free)["layout"] == "free"
    assert [r["text"] for r in free.rows("train")] == [r["text"] for r in sides.rows("train")]
    assert (free.root / "images" / "000003.png").read_bytes() != (sides.root / "images" / "000003.png").read_bytes()
    again = generate_binding_dataset(tmp_path / "f2", n=20, seed=1, image_size=32, layout="free")
    assert (again.root / "images" / "000003.png").read_bytes() == (free.root / "images" / "000003.png").read_bytes()


def test_bad_layouts_are_refused(tmp_path):
    scene = PairScene("red", "circle", "blue", "square")
    with pytest.raises(ValueError, match="layout"):
        render_pair(scene, 32, layout="grid")
    with pytest.raises(ValueError, match="rng"):
        render_pair(scene, 32, layout="free")
    with pytest.raises(ValueError, match="layout"):
        generate_binding_dataset(tmp_path / "x", n=10, layout="diagonal")
