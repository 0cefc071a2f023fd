"""The pieces of the autofaiss baseline that run in the project venv (the venv and build need PyPI: not here)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from benchmarks import _autofaiss


def test_parse_params():
    assert _autofaiss.parse_params("") == []
    assert _autofaiss.parse_params("nprobe=16,efSearch=32,ht=2048") == [
        ("nprobe", 16.0),
        ("efSearch", 32.0),
        ("ht", 2048.0),
    ]
    for bad in ("nprobe", "nprobe=x", "nprobe=1,,efSearch=2"):
        with pytest.raises(ValueError, match="malformed"):
            _autofaiss.parse_params(bad)


def test_apply_params_sets_what_applies_and_skips_the_rest():
    index = faiss.index_factory(8, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32))
    _autofaiss.apply_params(index, "nprobe=3,efSearch=64")  # no HNSW quantizer here: efSearch is skipped
    assert faiss.extract_index_ivf(index).nprobe == 3


def test_memory_string_is_exact_bytes():
    assert _autofaiss.memory_string(4 * 2**30) == f"{4 * 2**30}B"


def test_embeddings_are_written_in_row_order(tmp_path):
    x = np.arange(50, dtype=np.float32).reshape(25, 2)
    _autofaiss.write_numpy_embeddings(x, tmp_path, rows_per_file=10)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == 3
    np.testing.assert_array_equal(np.concatenate([np.load(f) for f in files]), x)
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "other.npy", x)
    with pytest.raises(ValueError, match="other .npy"):
        _autofaiss.write_numpy_embeddings(x, tmp_path)
