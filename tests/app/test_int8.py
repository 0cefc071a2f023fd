"""onnx-int8 serves only when its measured R@1 holds; otherwise the service refuses it and says why."""

from __future__ import annotations

import json

import pytest

from app import int8
from app.config import Settings
from app.encoders import load_encoder
from crossmodal_kernel.onnx_encoder import OnnxEncoder
from training.synthetic.shapes import generate_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_dataset(root, n=120, seed=2, image_size=32)
    return root


def test_judge_allows_half_a_point():
    fp32 = {"t2i_R@1": 0.800, "i2t_R@1": 0.700}
    ok = int8.judge(fp32, {"t2i_R@1": 0.796, "i2t_R@1": 0.705}, "the set")
    assert ok["accepted"] and ok["drop_points"] == {"t2i_R@1": 0.4, "i2t_R@1": -0.5}
    bad = int8.judge(fp32, {"t2i_R@1": 0.800, "i2t_R@1": 0.690}, "the set")
    assert not bad["accepted"] and "i2t_R@1 drops 1.00 points, more than the 0.5 allowed" in bad["why"]


def test_refused_without_an_evaluation_set(tmp_path):
    encoder = load_encoder(Settings(data_dir=tmp_path, device="cpu"), "test:tiny", runtime="onnx-int8")
    assert isinstance(encoder, OnnxEncoder) and encoder.runtime == "onnx"
    assert "CROSSMODAL_INT8_EVAL_SET" in encoder.runtime_warnings[-1]
    assert "refused" in encoder.runtime_warnings[-1]


def test_measured_on_the_evaluation_set_and_remembered(tmp_path, world, monkeypatch):
    settings = Settings(data_dir=tmp_path, device="cpu", int8_eval_set=str(world))
    encoder = load_encoder(settings, "test:tiny", runtime="onnx-int8")
    both = [json.loads(p.read_text()) for p in (tmp_path / "onnx").glob("*-int8.verdict-*.json")]
    text_only = [json.loads(p.read_text()) for p in (tmp_path / "onnx").glob("*-int8-text.verdict-*.json")]
    assert len(both) == 1 and len(text_only) == (0 if both[0]["accepted"] else 1)
    for verdict in both + text_only:
        assert verdict == {**int8.judge(verdict["fp32"], verdict["int8"], str(world)), "towers": verdict["towers"]}
    accepted = [v for v in both + text_only if v["accepted"]]
    assert encoder.runtime == ("onnx-int8" if accepted else "onnx")
    if accepted:
        assert isinstance(encoder, OnnxEncoder) and encoder.graphs is not None
        assert encoder.graphs.meta["quantized"]["text"].startswith("int8")
        assert encoder.runtimes["image"] == ("onnx-int8" if accepted[0]["towers"] == "both towers" else "onnx")
        assert encoder.encode_texts(["a red circle"]).shape == (1, 32)

    monkeypatch.setattr(int8, "_recalls", lambda *a: pytest.fail("measured again"))
    assert load_encoder(settings, "test:tiny", runtime="onnx-int8").runtime == encoder.runtime


def _fake_recalls(drops: dict[str, float]):
    """R@1 0.9 for fp32 ONNX; for int8 (both towers / text only), 0.9 less the given points."""

    def recalls(encoder, pairs):
        if encoder.runtime == "onnx":
            return {"t2i_R@1": 0.9, "i2t_R@1": 0.9}
        key = "both" if encoder.runtimes["image"] == "onnx-int8" else "text"
        return {"t2i_R@1": 0.9 - drops[key] / 100, "i2t_R@1": 0.9}

    return recalls


def test_refused_when_recall_drops(tmp_path, world, monkeypatch):
    monkeypatch.setattr(int8, "_recalls", _fake_recalls({"both": 10, "text": 2}))
    settings = Settings(data_dir=tmp_path, device="cpu", int8_eval_set=str(world))
    encoder = load_encoder(settings, "test:tiny", runtime="onnx-int8")
    assert encoder.runtime == "onnx" and encoder.runtimes == {"text": "onnx", "image": "onnx"}
    why = encoder.runtime_warnings[-1]
    assert "both towers: " in why and "t2i_R@1 drops 10.00 points, more than the 0.5 allowed" in why
    assert "the text tower: " in why and "t2i_R@1 drops 2.00 points" in why


def test_the_text_tower_alone_when_only_it_keeps_recall(tmp_path, world, monkeypatch):
    monkeypatch.setattr(int8, "_recalls", _fake_recalls({"both": 3, "text": 0.2}))
    settings = Settings(data_dir=tmp_path, device="cpu", int8_eval_set=str(world))
    encoder = load_encoder(settings, "test:tiny", runtime="onnx-int8")
    assert encoder.runtime == "onnx-int8" and encoder.runtimes == {"text": "onnx-int8", "image": "onnx"}
    assert encoder.runtime_warnings == ()
