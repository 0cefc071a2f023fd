"""For the training tests: a tiny fine-tuning configuration, and reading its checkpoints."""

from __future__ import annotations

import torch

from training.config import TrainConfig


def train_config(manifest, out, **over) -> TrainConfig:
    """A small, fast fine-tuning config for ``test:tiny``; keyword arguments override (dicts merge)."""
    raw = {
        "model": "test:tiny",
        "device": "cpu",
        "output_dir": str(out),
        "data": {"manifest": str(manifest), "val_fraction": 0.2, "num_workers": 0},
        "lock": {"image_unlocked_groups": None, "text_unlocked_layers": None},
        "optim": {"steps": 6, "batch_size": 8, "warmup_steps": 2, "lr": 1e-3},
        "checkpoint_every": 100,
        "eval_every": 3,
    }
    for key, value in over.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return TrainConfig.model_validate(raw)


def checkpoint_weights(path):
    """The state dict of a checkpoint written by the trainer."""
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
