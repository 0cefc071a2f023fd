"""GPU placement with FAISS's GPU entry points faked, so both branches run on a CPU-only machine."""

import faiss
import numpy as np
import pytest

from index import gpu, tune


class FakeClonerOptions:
    def __init__(self):
        self.shard = False


@pytest.fixture
def index():
    idx = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    idx.add_with_ids(np.eye(8, dtype=np.float32), np.arange(100, 108))
    return idx


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend FAISS is a GPU build with ``count`` GPUs; records what the cloner was asked to do."""
    calls = []

    def install(count, fail=None):
        monkeypatch.setattr(faiss, "get_num_gpus", lambda: count)
        monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", FakeClonerOptions, raising=False)

        def cpu_to_all_gpus(index, co=None, ngpu=-1):
            calls.append({"index": index, "shard": co.shard, "ngpu": ngpu})
            if fail:
                raise RuntimeError(fail)
            return ("on-gpu", index)

        monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", cpu_to_all_gpus)
        return calls

    return install


def test_the_gpu_count_matches_the_faiss_build():
    """faiss-cpu reports 0; a faiss-gpu build (``.[gpu]``) reports what it sees, 0 on a machine without one."""
    if not hasattr(faiss, "GpuMultipleClonerOptions"):
        assert gpu.gpu_available() == 0
    else:
        assert gpu.gpu_available() == faiss.get_num_gpus() >= 0


def test_gpu_count_is_guarded(monkeypatch):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    assert gpu.gpu_available() == 2

    def broken():
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(faiss, "get_num_gpus", broken)
    assert gpu.gpu_available() == 0
    monkeypatch.delattr(faiss, "get_num_gpus")
    assert gpu.gpu_available() == 0


def test_cpu_fallback_is_logged(index):
    lines = []
    assert gpu.maybe_gpu(index, lines.append) is index
    assert lines == ["no FAISS GPU build or no GPU: using the CPU"]
    with pytest.raises(RuntimeError, match="no FAISS GPU"):
        gpu.to_gpu(index)


def test_gpu_count_without_gpu_classes_still_means_cpu(monkeypatch, index):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)  # a CPU build reporting a GPU: never trust it
    lines = []
    assert gpu.maybe_gpu(index, lines.append) is index
    assert "using the CPU" in lines[0]


def test_several_gpus_shard_the_index(fake_gpus, index):
    calls = fake_gpus(2)
    lines = []
    moved = gpu.maybe_gpu(index, lines.append)
    assert moved == ("on-gpu", index)
    assert calls == [{"index": index, "shard": True, "ngpu": 2}]
    assert lines == ["using 2 GPUs (index sharded)"]


def test_one_gpu_is_not_sharded(fake_gpus, index):
    calls = fake_gpus(1)
    lines = []
    gpu.maybe_gpu(index, lines.append)
    assert calls[0]["shard"] is False and calls[0]["ngpu"] == 1
    assert lines == ["using 1 GPU"]


def test_any_gpu_error_falls_back_to_the_cpu(fake_gpus, index):
    fake_gpus(2, fail="This index type is not implemented on GPU.")  # e.g. HNSW
    lines = []
    assert gpu.maybe_gpu(index, lines.append) is index
    assert "not implemented on GPU" in lines[0] and lines[0].endswith("using the CPU")


def test_default_log_is_the_module_logger(fake_gpus, index, caplog):
    fake_gpus(3)
    with caplog.at_level("INFO", logger="index.gpu"):
        gpu.maybe_gpu(index)
    assert "using 3 GPUs" in caplog.text


def test_to_cpu(monkeypatch, index):
    assert gpu.to_cpu(index) is index  # CPU build: nothing to convert
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda i: ("on-cpu", i), raising=False)
    assert gpu.to_cpu(index) == ("on-cpu", index)


def test_search_params_go_through_the_gpu_parameter_space_when_there_is_one(monkeypatch):
    calls = []

    class FakeGpuParameterSpace:
        def set_index_parameter(self, index, name, value):
            calls.append((index, name, value))

    monkeypatch.setattr(faiss, "GpuParameterSpace", FakeGpuParameterSpace, raising=False)
    tune.set_search_param("idx", "nprobe", 32)
    assert calls == [("idx", "nprobe", 32)]


def test_the_builder_trains_and_adds_on_the_gpu_and_returns_a_cpu_index(monkeypatch, caplog):
    """With a GPU present, k-means and adds run on the GPU copy; the saved index comes back to the CPU."""
    from index.builder import array_shards, build_index
    from index.factory import make_plan

    moved, returned = [], []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", FakeClonerOptions, raising=False)

    def to_gpus(index, co=None, ngpu=-1):  # a stand-in "GPU index" that still works on the CPU
        moved.append(index)
        return index

    def to_cpu(index):
        returned.append(index)
        return index

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", to_gpus)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", to_cpu, raising=False)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((2000, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    ids = np.arange(2000, dtype=np.int64) * 3
    with caplog.at_level("INFO"):
        index = build_index(array_shards(ids, xb), 16, make_plan("ivf_flat", 2000, 16), gpu=True)
    assert len(moved) == 1 and returned == moved and index.ntotal == 2000
    assert "using 1 GPU" in caplog.text
    moved.clear()
    build_index(array_shards(ids, xb), 16, make_plan("hnsw", 2000, 16), gpu=True)
    assert moved == []  # HNSW has no GPU version
    build_index(array_shards(ids, xb), 16, make_plan("ivf_flat", 2000, 16), gpu=False)
    assert moved == []
