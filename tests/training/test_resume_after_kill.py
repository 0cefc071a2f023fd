"""What a user does: start a fine-tune, SIGKILL it after a checkpoint, run the same command again.

The resumed run's ``final.pt`` must be bit-identical to an uninterrupted run's (CPU), with hard
negatives (queue and caption perturbations), evaluation between checkpoints and DataLoader workers,
and under torchrun with two gloo ranks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.training_runs import checkpoint_weights, train_config
from training.synthetic.shapes import generate_dataset

SCRIPT = Path(__file__).with_name("resume_run.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ds"), n=64, seed=0, image_size=32).manifest


def _config(manifest, out: Path, ranks: int) -> Path:
    hard = {"queue_size": 32} if ranks > 1 else {"queue_size": 32, "perturb_captions": 2}
    cfg = train_config(
        manifest,
        out,
        data={"num_workers": 2},
        optim={"steps": 12, "batch_size": 8},
        hard_negatives=hard,
        checkpoint_every=5,
        eval_every=3,  # evaluations at 3, 6, 9, 12: between the checkpoints at 5 and 10
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    path.write_text(cfg.model_dump_json())
    return path


def _command(config: Path, ranks: int, *extra: str) -> list[str]:
    if ranks == 1:
        return [sys.executable, str(SCRIPT), str(config), *extra]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    return [*launcher, str(SCRIPT), str(config), *extra]


def _run(config: Path, ranks: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(_command(config, ranks), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _wait_until_gone(marker: str, timeout: float = 30.0) -> None:
    """No process of the killed run may live on (an orphaned rank would train beside the resumed run)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    if (proc / "stat").read_text().split(") ")[1][0] != "Z":
                        alive.append(proc.name)
            except OSError:
                continue
        if not alive:
            return
        assert time.monotonic() < deadline, f"processes of the killed run still alive: {alive}"
        time.sleep(0.2)


@pytest.mark.slow  # three runs in processes of their own (torchrun for 2 ranks), each loading torch
@pytest.mark.parametrize("ranks", [1, 2])
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_weights(manifest, tmp_path, ranks):
    straight = tmp_path / "straight"
    _run(_config(manifest, straight, ranks), ranks)

    killed = tmp_path / "killed"
    config = _config(manifest, killed, ranks)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _command(config, ranks, "--hold-at", "7"), env=env, start_new_session=True, stderr=subprocess.DEVNULL
    )
    marker, deadline = killed / "step.txt", time.monotonic() + 300
    while not (marker.exists() and marker.read_text() == "7"):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before step 7"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher's group; torchrun's ranks die with it (PDEATHSIG)
    process.wait()
    _wait_until_gone(str(config))
    assert torch.load(killed / "checkpoints" / "last.pt", weights_only=False)["step"] == 5
    assert not (killed / "final.pt").exists()

    out = _run(config, ranks)  # the same command again
    assert "resumed_from=5" in out and "steps=12" in out
    a, b = checkpoint_weights(straight / "final.pt"), checkpoint_weights(killed / "final.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
