"""The ONNX Runtime encoder on test:tiny: equal to PyTorch, any batch, cached, and a safe fallback."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import torch

from crossmodal_kernel import onnx_encoder, onnx_export
from crossmodal_kernel.checkpoints import save_checkpoint
from crossmodal_kernel.encoder import Encoder
from crossmodal_kernel.loading import load_model
from crossmodal_kernel.onnx_encoder import OnnxEncoder, RuntimeUnavailable, build_encoder, providers, session_options
from tests.helpers.onnx_equality import TEXTS, assert_equal_embeddings, assert_equal_recalls, images, row_cosines
from training.synthetic.shapes import generate_dataset


@pytest.fixture(scope="module")
def loaded():
    return load_model("test:tiny", "cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def pair(loaded, cache):
    return Encoder(loaded, batch_size=4), build_encoder(loaded, "onnx", cache, batch_size=4)


def test_onnx_serves_both_towers(pair, cache):
    _, encoder = pair
    assert isinstance(encoder, OnnxEncoder)
    assert encoder.runtime == "onnx" and encoder.runtimes == {"text": "onnx", "image": "onnx"}
    assert encoder.runtime_warnings == ()
    assert encoder.graphs is not None and encoder.graphs.folder.parent == cache
    assert f"ort{ort.__version__}-" in encoder.graphs.folder.name
    assert encoder.graphs.meta["min_cosine"] >= onnx_export.MIN_COSINE
    assert not encoder.graphs.meta["dynamic_text_length"]  # CLIP's causal mask spans its whole context


def test_embeddings_equal_torch(pair):
    assert_equal_embeddings(*pair)


def test_any_batch_size(pair):
    torch_encoder, encoder = pair
    texts = [f"{i} {TEXTS[i % len(TEXTS)]}" for i in range(11)]  # batch_size 4: chunks of 4, 4, 3
    for n in (1, 3, 11):
        assert row_cosines(torch_encoder.encode_texts(texts[:n]), encoder.encode_texts(texts[:n])).min() >= 0.9999
    pixels = torch.stack([encoder.preprocess(im.convert("RGB")) for im in images()])
    got = encoder.encode_image_tensors(pixels)
    assert row_cosines(torch_encoder.encode_image_tensors(pixels), got).min() >= 0.9999
    assert encoder.encode_texts([]).shape == (0, 32)


def test_recalls_identical_on_the_evaluation_set(pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_dataset(root, n=200, seed=3, image_size=32)
    report = assert_equal_recalls(*pair, root)
    assert report["pairs"] >= 10


def test_threads_share_one_encoder(pair):
    torch_encoder, encoder = pair
    texts = [f"query number {i}" for i in range(24)]
    with ThreadPoolExecutor(6) as pool:
        rows = list(pool.map(lambda t: encoder.encode_texts([t])[0], texts))
    assert row_cosines(np.stack(rows), torch_encoder.encode_texts(texts)).min() >= 0.9999


def test_the_cache_is_reused_and_keyed_by_the_weights(loaded, cache, tmp_path, monkeypatch):
    first = build_encoder(loaded, "onnx", cache)
    assert isinstance(first, OnnxEncoder)
    monkeypatch.setattr(onnx_export, "export_towers", lambda *a: pytest.fail("exported again"))
    again = build_encoder(loaded, "onnx", cache)
    assert isinstance(again, OnnxEncoder) and again.graphs.folder == first.graphs.folder
    elsewhere = build_encoder(loaded, "onnx", tmp_path / "other-data-dir")  # copied, not exported again
    assert isinstance(elsewhere, OnnxEncoder) and elsewhere.graphs.folder.parent == tmp_path / "other-data-dir"
    assert elsewhere.graphs.meta == first.graphs.meta
    monkeypatch.undo()

    checkpoint = save_checkpoint(loaded, tmp_path / "models" / "7" / "checkpoint.pt")
    tuned = build_encoder(load_model(f"test:tiny@{checkpoint}", "cpu"), "onnx", cache)
    assert isinstance(tuned, OnnxEncoder)
    assert tuned.graphs.folder.parent == checkpoint.parent / "onnx"  # beside the checkpoint
    assert onnx_export.graph_key(f"test:tiny@{checkpoint}") != onnx_export.graph_key("test:tiny")
    assert not [p for p in tuned.graphs.folder.parent.iterdir() if ".tmp-" in p.name]  # published atomically


def test_a_failed_export_falls_back_to_torch_with_a_warning(loaded, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    monkeypatch.setattr(onnx_export, "_PUBLISHED", {})  # no copy of an earlier test's export either
    encoder = build_encoder(loaded, "onnx", tmp_path)
    assert type(encoder) is Encoder and encoder.runtimes == {"text": "torch", "image": "torch"}
    assert "PyTorch serves it instead" in encoder.runtime_warnings[0]
    assert "unsupported operator" in encoder.runtime_warnings[0]
    assert "unsupported operator" in caplog.text
    assert encoder.encode_texts(["still works"]).shape == (1, 32)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_a_graph_that_differs_from_torch_is_refused(loaded, pair):
    _, encoder = pair
    other = load_model("test:tiny", "cpu")
    with torch.no_grad():
        other.model.text_projection.mul_(-1)  # the same shapes, other weights
    pixels, tokens = onnx_export.probe_inputs(other)
    graphs = encoder.graphs
    with pytest.raises(onnx_export.ExportError, match="text tower differs"):
        onnx_export.check_graphs(other, graphs.path("image"), graphs.path("text"), pixels, tokens)


def test_auto_without_onnxruntime_is_torch_quietly(loaded, tmp_path, monkeypatch):
    def missing():
        raise RuntimeUnavailable("onnxruntime is not installed")

    monkeypatch.setattr(onnx_encoder, "_available", missing)
    quiet = build_encoder(loaded, "auto", tmp_path)
    assert type(quiet) is Encoder and quiet.runtime_warnings == ()
    loud = build_encoder(loaded, "onnx", tmp_path)
    assert type(loud) is Encoder and "not installed" in loud.runtime_warnings[0]
    assert build_encoder(loaded, "torch", tmp_path).runtime == "torch"
    with pytest.raises(ValueError, match="unknown runtime"):
        build_encoder(loaded, "tensorrt", tmp_path)


def test_providers():
    assert providers(torch.device("cpu"), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers(torch.device("cuda:1"), cuda) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    with pytest.raises(RuntimeUnavailable, match="onnxruntime-gpu"):
        providers(torch.device("cuda"), ["CPUExecutionProvider"])


def test_cuda_provider_with_fakes(loaded, cache, monkeypatch):
    """On a GPU with onnxruntime-gpu, sessions ask for the CUDA provider first (faked: no GPU here)."""
    asked = []
    real = ort.InferenceSession

    def session(path, options, providers):
        asked.append(providers)
        return real(path, options, providers=["CPUExecutionProvider"])

    on_gpu = dataclasses.replace(loaded, device=torch.device("cuda:0"))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    encoder = build_encoder(on_gpu, "auto", cache)
    assert isinstance(encoder, OnnxEncoder)
    assert asked == [[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]] * 2
    assert encoder.encode_texts(["on the fake gpu"]).shape == (1, 32)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert type(build_encoder(on_gpu, "auto", cache)) is Encoder  # torch with AMP beats ONNX on the CPU
    refused = build_encoder(on_gpu, "onnx", cache)
    assert type(refused) is Encoder and "onnxruntime-gpu" in refused.runtime_warnings[0]


def test_session_options_leave_cores_to_the_request_threads():
    options = session_options(threads=3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options().intra_op_num_threads == torch.get_num_threads()


def test_a_checkpoint_folder_we_may_not_write_caches_under_the_data_dir(loaded, tmp_path, monkeypatch):
    checkpoint = save_checkpoint(loaded, tmp_path / "read-only" / "checkpoint.pt")
    spec = f"test:tiny@{checkpoint}"
    assert onnx_export.cache_dir(spec, tmp_path / "data").parent == checkpoint.parent / "onnx"
    monkeypatch.setattr(onnx_export.os, "access", lambda path, mode: False)
    assert onnx_export.cache_dir(spec, tmp_path / "data").parent == tmp_path / "data"
