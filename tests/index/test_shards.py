import numpy as np

from index import shards


def test_write_then_read_back(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    shards.write_shard(tmp_path, np.arange(5), x[:5])
    shards.write_shard(tmp_path, np.arange(5, 10), x[5:])
    assert shards.shard_numbers(tmp_path) == [0, 1]
    got_ids = np.concatenate([i for i, _ in shards.iter_shards(tmp_path)])
    assert got_ids.tolist() == list(range(10))
    np.testing.assert_array_equal(shards.embedded_ids(tmp_path), np.arange(10))


def test_vectors_are_stored_as_float16(tmp_path):
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    path = shards.write_shard(tmp_path, np.arange(3), x)
    assert np.load(path).dtype == np.float16
    _, back = next(shards.iter_shards(tmp_path))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, x, atol=1e-2)


def test_later_shard_wins_for_a_repeated_id(tmp_path):
    shards.write_shard(tmp_path, np.array([1, 2]), np.array([[1, 0], [0, 1]], np.float32))
    shards.write_shard(tmp_path, np.array([2]), np.array([[1, 1]], np.float32))
    ids, x = shards.load_all(tmp_path)
    assert ids.tolist() == [1, 2]
    np.testing.assert_array_equal(x[1], [1, 1])


def test_half_written_shard_is_invisible(tmp_path):
    shards.write_shard(tmp_path, np.array([1]), np.ones((1, 2), np.float32))
    # a crash after the vectors but before the ids file: the shard does not exist
    np.save(tmp_path / "shard-00001.npy", np.ones((1, 2), np.float16))
    assert shards.shard_numbers(tmp_path) == [0]
    assert shards.embedded_ids(tmp_path).tolist() == [1]
    # and the next write reuses the number instead of mixing with the orphan
    shards.write_shard(tmp_path, np.array([5]), np.zeros((1, 2), np.float32))
    assert shards.load_all(tmp_path)[0].tolist() == [1, 5]


def test_empty_directory(tmp_path):
    ids, x = shards.load_all(tmp_path / "missing", dim=4)
    assert ids.shape == (0,) and x.shape == (0, 4)
