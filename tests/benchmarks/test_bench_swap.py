"""bench_swap runs end to end at a tiny size (its figures come from a full run; this only keeps it working)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import bench_swap


@pytest.mark.slow  # a server and a worker process, and a promotion job's child, each loading torch
def test_bench_swap_tiny_run_has_no_errors_and_sees_both_flips():
    args = argparse.Namespace(
        items=200, concurrency=4, model="test:tiny", phase_seconds=1.0, warmup=0.5, no_record=True
    )
    result = bench_swap.run(args)
    assert result["job_status"] == "succeeded" and result["errors"] == 0
    assert result["unknown_model_responses"] == 0
    assert result["promote_to_first_new_s"] > 0 and result["rollback_to_first_old_s"] > 0
    assert set(result["phases"]) == {"before", "during promotion", "after promotion", "after rollback"}
    assert "| before |" in bench_swap.markdown(result, args)
