import numpy as np
import pytest
from PIL import Image

from index import shards
from index.embed import embed_images, embed_texts
from training.encoder import Encoder


@pytest.fixture(scope="module")
def encoder():
    return Encoder.from_spec("test:tiny", device="cpu", batch_size=4)


def _images(root, n):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("num_workers", [0, 2])
def test_images_are_embedded_like_the_encoder_does_and_bad_files_reported(encoder, tmp_path, num_workers):
    paths = _images(tmp_path / "imgs", 9)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    items = [(100 + i, p) for i, p in enumerate(paths)] + [
        (999, str(tmp_path / "bad.png")),
        (998, "/nope.png"),
    ]
    seen = []
    report = embed_images(
        encoder,
        items,
        tmp_path / "out",
        batch_size=4,
        num_workers=num_workers,
        shard_size=4,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.embedded == 9 and set(report.failed) == {998, 999}
    assert "UnidentifiedImageError" in report.failed[999]
    assert len(report.shards) >= 2  # flushed every shard_size vectors
    ids, x = shards.load_all(tmp_path / "out")
    assert sorted(ids.tolist()) == list(range(100, 109))
    expected = encoder.encode_images([Image.open(p) for p in paths])
    np.testing.assert_allclose(x[np.argsort(ids)], expected, atol=2e-3)  # float16 storage
    assert seen[-1] == (11, 11)


def test_decompression_bombs_are_refused(encoder, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    report = embed_images(encoder, [(1, str(big))], tmp_path / "out", num_workers=0, max_pixels=10_000)
    assert report.embedded == 0 and "exceeds 10000 pixels" in report.failed[1]


def test_texts(encoder, tmp_path):
    items = [(i, f"caption number {i}") for i in range(10)]
    report = embed_texts(encoder, items, tmp_path / "t", batch_size=3, shard_size=4)
    assert report.embedded == 10 and len(report.shards) == 3
    ids, x = shards.load_all(tmp_path / "t")
    assert ids.tolist() == list(range(10))
    np.testing.assert_allclose(x, encoder.encode_texts([t for _, t in items]), atol=2e-3)


def test_nothing_to_do(encoder, tmp_path):
    assert embed_images(encoder, [], tmp_path).embedded == 0
    assert embed_texts(encoder, [], tmp_path).embedded == 0
