import hashlib
import json
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest

from training.synthetic.shapes import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    SWAPPABLE,
    Scene,
    _assign_splits,
    generate_dataset,
    load_dataset,
    render,
    sample_scene,
    swap_attribute,
)

N = 50


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), n=N, seed=0, image_size=64)


def _digest(root) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _differences(a: Scene, b: Scene) -> list[str]:
    return [k for k, v in asdict(a).items() if asdict(b)[k] != v]


def test_caption_is_a_function_of_the_attributes():
    red_circle = Scene("red", "circle", "large", "top left")
    assert red_circle.caption() == "a large red circle in the top left"
    assert Scene("blue", "star", "small", "center").caption() == "a small blue star in the center"
    captions = {Scene(c, s, z, p).caption() for c in COLOURS for s in SHAPES for z in SIZES for p in POSITIONS}
    assert len(captions) == len(COLOURS) * len(SHAPES) * len(SIZES) * len(POSITIONS)


def test_swap_attribute_changes_exactly_that_attribute():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng)
        for attribute in (*SWAPPABLE, "size"):
            swapped = swap_attribute(scene, attribute, rng)
            assert _differences(scene, swapped) == [attribute]
            assert swapped.caption() != scene.caption()
    with pytest.raises(ValueError):
        swap_attribute(scene, "texture", rng)


def test_render_is_rgb_of_the_requested_size_and_shows_the_colour():
    rng = np.random.default_rng(1)
    palette = np.array(list(COLOURS.values()), dtype=float)
    for _ in range(40):
        scene = sample_scene(rng)
        for image in (render(scene, 96, rng), render(scene, 96)):
            assert image.mode == "RGB" and image.size == (96, 96)
            pixels = np.asarray(image, dtype=float).reshape(-1, 1, 3)
            distance = np.linalg.norm(pixels - palette[None], axis=2)
            close = (distance < 30).sum(axis=0)  # pixels near each palette colour
            named = list(COLOURS).index(scene.colour)
            assert close[named] > 0.01 * 96 * 96, scene
            assert close.argmax() == named, scene


def test_render_jitter_makes_every_image_different():
    scene = Scene("red", "square", "small", "center")
    images = [np.asarray(render(scene, 64, np.random.default_rng(s))) for s in range(5)]
    assert all(not np.array_equal(images[0], other) for other in images[1:])
    assert np.array_equal(np.asarray(render(scene, 64)), np.asarray(render(scene, 64)))


def test_manifest_rows_match_their_captions_and_images(dataset):
    rows = dataset.rows()
    assert len(rows) == N and len({r["id"] for r in rows}) == N
    for row in rows:
        scene = Scene(row["colour"], row["shape"], row["size"], row["position"])
        assert row["text"] == scene.caption()
        assert not row["image"].startswith("/")
        assert dataset.image_path(row).is_file()


def test_split_proportions(dataset):
    counts = Counter(r["split"] for r in dataset.rows())
    assert counts == {"train": 40, "val": 5, "test": 5}
    assert len(dataset.rows("test")) == 5
    big = Counter(_assign_splits(1000, (0.7, 0.2, 0.1), seed=3))
    assert big == {"train": 700, "val": 200, "test": 100}


def test_hard_distractors_differ_by_the_recorded_attribute(dataset):
    test_rows = {r["id"]: r for r in dataset.rows("test")}
    hard = dataset.hard_rows()
    assert {h["id"] for h in hard} == set(test_rows)
    captions = {
        Scene(c, s, z, p).caption(): Scene(c, s, z, p)
        for c in COLOURS
        for s in SHAPES
        for z in SIZES
        for p in POSITIONS
    }
    for h in hard:
        row = test_rows[h["id"]]
        assert h["text"] == row["text"] and h["image"] == row["image"]
        assert _differences(captions[h["text"]], captions[h["distractor"]]) == [h["swapped"]]
    # The swapped attribute rotates, so every kind appears.
    assert {h["swapped"] for h in hard} == set(SWAPPABLE)


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path, dataset):
    again = generate_dataset(tmp_path / "again", n=N, seed=0, image_size=64)
    assert _digest(again.root) == _digest(dataset.root)
    other = generate_dataset(tmp_path / "other", n=N, seed=1, image_size=64)
    a, b = _digest(dataset.root), _digest(other.root)
    assert a["manifest.csv"] != b["manifest.csv"]
    assert all(a[f"images/{i:06d}.png"] != b[f"images/{i:06d}.png"] for i in range(N))


def test_items_do_not_depend_on_n(tmp_path, dataset):
    smaller = generate_dataset(tmp_path, n=10, seed=0, image_size=64)
    for small, full in zip(smaller.rows(), dataset.rows()[:10], strict=True):
        assert small["text"] == full["text"]
        assert smaller.image_path(small).read_bytes() == dataset.image_path(full).read_bytes()


def test_rerun_is_a_no_op(tmp_path):
    first = generate_dataset(tmp_path, n=10, seed=0, image_size=32)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    calls = []
    second = generate_dataset(tmp_path, n=10, seed=0, image_size=32, progress=lambda done, total: calls.append(done))
    assert second == first
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes
    assert load_dataset(tmp_path).rows() == first.rows()


def test_interrupted_run_is_regenerated(tmp_path):
    generate_dataset(tmp_path, n=10, seed=0, image_size=32)
    expected = _digest(tmp_path)
    (tmp_path / "manifest.csv").unlink()  # what an interrupted run leaves
    (tmp_path / "images" / "000003.png").write_bytes(b"truncated")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path)
    calls = []
    generate_dataset(tmp_path, n=10, seed=0, image_size=32, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (10, 10)
    assert _digest(tmp_path) == expected


def test_changed_parameters_regenerate(tmp_path):
    generate_dataset(tmp_path, n=12, seed=0, image_size=32)
    ds = generate_dataset(tmp_path, n=8, seed=0, image_size=32)
    assert len(ds.rows()) == 8
    assert json.loads((tmp_path / "dataset.json").read_text())["n"] == 8
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{i:06d}.png" for i in range(8)]


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"seed": -1}, {"splits": (0.5, 0.5, 0.5)}])
def test_bad_parameters_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, **{"n": 5, **kwargs})


def test_cover_puts_every_scene_first_once_and_keeps_the_rest(tmp_path):
    from training.synthetic.shapes import N_SCENES, all_scenes

    assert N_SCENES == len(set(all_scenes())) == 480
    n = N_SCENES + 20
    plain = generate_dataset(tmp_path / "plain", n=n, seed=3, image_size=32).rows()
    covered = generate_dataset(tmp_path / "cover", n=n, seed=3, image_size=32, cover=True).rows()
    key = lambda r: (r["colour"], r["shape"], r["size"], r["position"])  # noqa: E731
    assert {key(r) for r in covered[:N_SCENES]} == {(s.colour, s.shape, s.size, s.position) for s in all_scenes()}
    assert [key(r) for r in covered[N_SCENES:]] == [key(r) for r in plain[N_SCENES:]]
    assert len({key(r) for r in plain}) < N_SCENES  # independent draws miss some scenes
    assert [r["split"] for r in covered] == [r["split"] for r in plain]
