import numpy as np
import pytest
import torch
from PIL import Image

import index.embed as embed_mod
from crossmodal_kernel.encoder import Encoder
from index import shards
from index.embed import embed_images, embed_texts


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
        num_workers=num_workers,
        shard_size=4,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.embedded == 9 and set(report.failed) == {998, 999}
    assert "NotAnImage" in report.failed[999]
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
    assert report.embedded == 0
    assert "TooManyPixels" in report.failed[1] and "the limit is 10000 pixels" in report.failed[1]


def test_texts_are_encoded_in_the_encoders_batches(tmp_path):
    encoder = Encoder.from_spec("test:tiny", device="cpu", batch_size=3)
    items = [(i, f"caption number {i}") for i in range(10)]
    seen = []
    report = embed_texts(encoder, items, tmp_path / "t", shard_size=4, progress=lambda d, t: seen.append(d))
    assert report.embedded == 10 and len(report.shards) == 3
    assert seen == [3, 4, 7, 8, 10]  # batches of 3 within shards of 4: the one batch-size setting
    ids, x = shards.load_all(tmp_path / "t")
    assert ids.tolist() == list(range(10))
    np.testing.assert_allclose(x, encoder.encode_texts([t for _, t in items]), atol=2e-3)


def test_nothing_to_do(encoder, tmp_path):
    assert embed_images(encoder, [], tmp_path).embedded == 0
    assert embed_texts(encoder, [], tmp_path).embedded == 0


def test_plan_is_deterministic_and_named_by_id_range():
    items = [(i, f"t{i}") for i in (5, 3, 9, 1, 7)]
    plan = embed_mod.plan_shards(items, 2)
    assert [stem for stem, _ in plan] == [
        "shard-000000000001-000000000003",
        "shard-000000000005-000000000007",
        "shard-000000000009-000000000009",
    ]
    assert plan == embed_mod.plan_shards(list(reversed(items)), 2)


def test_a_killed_job_resumes_at_the_shard_in_flight(encoder, tmp_path, monkeypatch):
    items = [(i, f"caption {i}") for i in range(10)]
    clean = embed_mod.embed_sharded(encoder, items, tmp_path / "clean", "text", shard_size=3)
    assert clean.embedded == 10 and len(clean.shards) == 4

    real = embed_mod.embed_texts
    calls = {"n": 0}

    def dies_on_the_third_shard(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(embed_mod, "embed_texts", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        embed_mod.embed_sharded(encoder, items, tmp_path / "run", "text", shard_size=3)
    monkeypatch.setattr(embed_mod, "embed_texts", real)
    assert len(shards.shard_stems(tmp_path / "run")) == 2  # the two finished shards survived
    again = embed_mod.embed_sharded(encoder, items, tmp_path / "run", "text", shard_size=3)
    assert again.skipped_shards == 2 and again.embedded == 4
    for (ia, xa), (ib, xb) in zip(
        shards.iter_shards(tmp_path / "clean"), shards.iter_shards(tmp_path / "run"), strict=True
    ):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(xa, xb)


def _rank_worker(rank, items, out):
    torch.set_num_threads(1)
    enc = Encoder.from_spec("test:tiny", device="cpu", batch_size=4)
    embed_mod.embed_sharded(enc, items, out, "image", shard_size=3, rank=rank, world_size=2, num_workers=0)


def test_two_ranks_write_what_one_process_writes(encoder, tmp_path):
    import torch.multiprocessing as mp

    paths = _images(tmp_path / "imgs", 11)
    items = [(100 + i, p) for i, p in enumerate(paths)]
    embed_mod.embed_sharded(encoder, items, tmp_path / "single", "image", shard_size=3, num_workers=0)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_rank_worker, args=(items, tmp_path / "ranks"), nprocs=2, start_method=method)
    assert shards.shard_stems(tmp_path / "single") == shards.shard_stems(tmp_path / "ranks")
    ids_a, xa = shards.load_all(tmp_path / "single")
    ids_b, xb = shards.load_all(tmp_path / "ranks")
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_allclose(xa, xb, atol=1e-3)


def test_sharded_embedding_reports_progress_within_each_shard(tmp_path):
    """A long shard must not go quiet (a job's progress and its cancel check ride on these calls)."""
    encoder = Encoder.from_spec("test:tiny", device="cpu", batch_size=2)
    items = [(i, f"caption {i}") for i in range(10)]
    seen = []
    embed_mod.embed_sharded(
        encoder, items, tmp_path / "t", "text", shard_size=6, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(2, 10), (4, 10), (6, 10), (6, 10), (8, 10), (10, 10), (10, 10)]
