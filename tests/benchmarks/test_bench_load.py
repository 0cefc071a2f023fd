"""bench_load runs end to end at a tiny size (its figures come from a full run; this only keeps it working)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest

from app.config import Settings
from benchmarks import bench_load
from benchmarks.bench_search import _queries, populate
from crossmodal_kernel.encoder import Encoder


@pytest.mark.slow  # three `crossmodal serve` processes, each loading torch and the model
def test_bench_load_tiny_runs_both_parts_without_errors():
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-test-"))
    populate(Settings(data_dir=tmp, model_spec="test:tiny"), 200, Encoder.from_spec("test:tiny", device="cpu"))
    args = argparse.Namespace(
        items=200, minutes=0.03, concurrency=[4], batch_seconds=1.0, warmup_seconds=0.2, model="test:tiny"
    )
    queries = _queries(50, seed=0)
    load, md = bench_load.part_load(tmp, args, queries)
    assert load["4"]["ok"] > 0 and load["4"]["errors_5xx"] == load["4"]["transport_errors"] == 0
    assert load["4"]["rss_mb"] and "| 4 |" in md
    batching, md = bench_load.part_batching(tmp, args, queries)
    assert batching["on"]["ok"] > 0 and batching["off"]["ok"] > 0 and batching["throughput_ratio"] > 0
    assert "| **on / off** |" in md
