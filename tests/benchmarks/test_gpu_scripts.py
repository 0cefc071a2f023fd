"""The GPU check scripts run end to end on a CPU (tiny shapes), so a lent GPU's minutes are not spent on a typo."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks import gpu_finetune

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_finetune_small_runs_the_trainer_and_the_raw_loop():
    out = gpu_finetune.main(["--small"])
    assert out["model"] == "test:tiny" and out["batch_size"] == 8
    assert out["loss_finite"] and out["checkpoint_written"]
    assert out["trainer_samples_per_s"] > 0 and out["raw_amp_loop_samples_per_s"] > 0
    assert out["ratio_trainer_vs_raw"] == out["trainer_samples_per_s"] / out["raw_amp_loop_samples_per_s"]


def test_gpu_shell_scripts_parse():
    for script in ("gpu_check.sh", "gpu_wheels.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)
