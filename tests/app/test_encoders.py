"""CROSSMODAL_RUNTIME picks what runs the towers; a failed export degrades to PyTorch with a /readyz warning."""

from __future__ import annotations

import torch

from app.config import Settings
from app.encoders import load_encoder, onnx_cache, wrap_encoder
from app.serving.state import SearchState
from crossmodal_kernel import onnx_export
from crossmodal_kernel.encoder import Encoder
from crossmodal_kernel.onnx_encoder import OnnxEncoder
from tests.helpers.onnx_equality import row_cosines
from tests.helpers.service import stack


def test_runtime_setting(tmp_path):
    settings = Settings(data_dir=tmp_path, device="cpu", batch_size=8)
    assert settings.runtime == "auto"
    auto = load_encoder(settings, "test:tiny")
    assert isinstance(auto, OnnxEncoder) and auto.batch_size == 8
    assert auto.graphs is not None and auto.graphs.folder.parent == onnx_cache(settings)
    torch_encoder = load_encoder(settings.model_copy(update={"runtime": "torch"}), "test:tiny")
    assert type(torch_encoder) is Encoder and torch_encoder.runtime == "torch"
    texts = ["a red circle", "", "ein blaues Quadrat"]
    assert row_cosines(auto.encode_texts(texts), torch_encoder.encode_texts(texts)).min() >= 0.9999
    onnx = load_encoder(settings, "test:tiny", runtime="onnx")
    assert isinstance(onnx, OnnxEncoder) and onnx.graphs is not None
    assert onnx.graphs.folder == auto.graphs.folder  # exported once, found by the second load


def test_models_being_trained_stay_on_torch(tmp_path):
    settings = Settings(data_dir=tmp_path, device="cpu")
    loaded = load_encoder(settings, "test:tiny", runtime="torch").loaded
    assert type(wrap_encoder(settings, loaded)) is Encoder
    assert not (tmp_path / "onnx").exists()


def test_a_failed_export_is_a_readyz_warning_not_a_failed_start(tmp_path, db_url, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no exporter for this operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    monkeypatch.setattr(onnx_export, "_PUBLISHED", {})  # no copy of another test's export either
    with stack(tmp_path, db_url, n=12, runtime="onnx") as s:
        state = SearchState(s.settings, s.session_factory)
        snapshot = state.refresh(force=True)
        assert snapshot.encoder is not None and snapshot.encoder.runtime == "torch"
        assert snapshot.problems == ()
        assert any("no exporter for this operator" in w and "PyTorch" in w for w in snapshot.warnings)
        assert snapshot.encoder.encode_texts(["still answers"]).shape == (1, 32)
