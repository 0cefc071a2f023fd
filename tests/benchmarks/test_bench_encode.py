"""benchmarks/bench_encode.py: the in-process part runs on test:tiny, and the report judges each goal."""

from __future__ import annotations

from argparse import Namespace

from app.config import Settings
from app.encoders import load_encoder
from benchmarks import bench_encode


def test_in_process_on_tiny(tmp_path):
    settings = Settings(data_dir=tmp_path, device="cpu")
    encoders = {rt: load_encoder(settings, "test:tiny", runtime=rt) for rt in ("torch", "onnx")}
    encoders |= bench_encode.session_variants(encoders["onnx"])
    got = bench_encode.in_process(encoders, repeats=3, queries=["a red circle", "a blue square"])
    assert set(got) == {"torch", "onnx", "onnx, spinning threads", "onnx, 1 intra-op thread"}
    for figures in got.values():
        assert set(figures) == {"text_b1", "image_b1", "image_decoded_b1", "text_b32", "image_b32"}
        assert all(v > 0 for v in figures.values())


def _http(p50: float, rps: float) -> dict:
    c32 = {"rps_ok": rps, "p50_ms": 300.0, "p99_ms": 900.0, "mean_batch": 4.0}
    c32 |= {"server_cpu_ms_per_request": 9.0, "client_cpu_ms_per_request": 4.0}
    return {"c1": {"p50_ms": p50, "p99_ms": 2 * p50}, "stages_p50_ms": {"encode": p50 / 2, "search": 1.0}, "c32": c32}


def test_report_judges_the_goals_against_torch():
    local = {"text_b1": 20.0, "image_b1": 40.0, "image_decoded_b1": 45.0, "text_b32": 100.0, "image_b32": 10.0}
    result = {
        "model": "builtin:lit-mini",
        "items": 10_000,
        "threads": 2,
        "export_and_load_s": 6.0,
        "int8_verdict": "not measured",
        "in_process": {"torch": local, "onnx": {**local, "text_b1": 5.0, "image_b1": 25.0}},
        "http": {"torch": _http(20.0, 60.0), "onnx": _http(11.0, 100.0)},
    }
    md = bench_encode.report(result, Namespace(queries=300, seconds=30))
    assert "text b1 4.00x (goal ≥ 3.0x: met)" in md
    assert "image b1 1.60x (goal ≥ 2.0x: **not met**)" in md
    assert "HTTP p50 0.55x (goal ≤ 0.6x: met)" in md
    assert "HTTP c32 1.67x (goal ≥ 1.5x: met)" in md
    assert "| onnx | 11.0 (0.55x) |" in md
