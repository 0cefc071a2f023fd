"""A fine-tuning run as a user starts it, for the kill-and-resume tests: ``resume_run.py CONFIG.json [--hold-at N]``.

``--hold-at N`` stops (sleeps) after step N's progress report, so the test can SIGKILL the process
group there, after a checkpoint and before the next one. Each step draws from the global torch RNG
(a stand-in for dropout, which ``test:tiny`` lacks): a resume that shifts that stream changes the weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import training.step
from crossmodal_kernel.processes import die_with_parent
from training.config import TrainConfig
from training.trainer import finetune


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--hold-at", type=int, default=None)
    args = parser.parse_args()
    die_with_parent()  # torchrun starts ranks in sessions of their own: a killed launcher must take them along
    cfg = TrainConfig.model_validate_json(args.config.read_text())
    set_train_mode = training.step.set_train_mode

    def set_train_mode_and_draw(model, c):
        set_train_mode(model, c)
        with torch.no_grad():
            model.logit_scale.add_(1e-3 * torch.rand(()))

    training.step.set_train_mode = set_train_mode_and_draw
    marker = Path(cfg.output_dir) / "step.txt"

    def progress(entry: dict) -> None:
        marker.write_text(str(entry["step"]))
        if entry["step"] == args.hold_at:
            while True:  # wait here for the SIGKILL
                time.sleep(1)

    result = finetune(cfg, progress=progress)
    print(f"steps={result.steps} resumed_from={result.resumed_from_step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
