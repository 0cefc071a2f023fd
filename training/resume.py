"""Resume state: one object that holds where a run is, written with everything that trains it.

A checkpoint (``checkpoints/last.pt``) is the :class:`TrainState` (step, data position, early
stopping, history), the trainable state of :class:`~training.assembly.TrainParts` (model, loss,
SSL heads, hard-negative queues, optimiser, scheduler, scaler), every RNG, and the
configuration that wrote it: a run resumed with another configuration is refused.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from crossmodal_kernel.atomic import atomic_path
from training.assembly import TrainParts
from training.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where a run is: ``position`` counts the global batches done in ``epoch``."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    best: float = -1.0  # best validation t2i R@1 so far
    stale: int = 0  # evaluations since it improved
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def state_path(cfg: TrainConfig) -> Path:
    return Path(cfg.output_dir) / "checkpoints" / "last.pt"


def save(parts: TrainParts, state: TrainState) -> None:
    """Write the checkpoint atomically (rank 0 only: the ranks hold the same state)."""
    if not parts.dist.is_main:
        return
    payload = {
        "config": _config_json(parts.cfg),
        **parts.trainable_state(),
        **asdict(state),
        "rng": rng_state(),
    }
    with atomic_path(state_path(parts.cfg)) as tmp:
        torch.save(payload, tmp)


def load(parts: TrainParts) -> TrainState:
    """The state to continue from: the checkpoint's, loaded into ``parts``, or a fresh one."""
    path = state_path(parts.cfg)
    if not path.exists():
        return TrainState()
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt["config"] != _config_json(parts.cfg):
        raise ValueError(f"{path} was written by another configuration; use a new output_dir")
    parts.load_trainable_state(ckpt)
    state = TrainState(**{name: ckpt[name] for name in TrainState.__dataclass_fields__})
    set_rng_state(ckpt["rng"])
    log.info("resumed from %s at step %d", path, state.step)
    return state


def rng_state() -> dict:
    return {
        "torch": torch.random.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_json(cfg: TrainConfig) -> dict:
    """The configuration as a checkpoint records it. ``augment.text`` is left out while it is all
    defaults, and so are the augmentation fields added later (``illumination``, ``text.synonyms``,
    ``text.wordnet_dir``) while they are, so checkpoints written before they existed still resume."""
    raw = json.loads(cfg.model_dump_json())
    if cfg.augment.illumination == type(cfg.augment).model_fields["illumination"].default:
        del raw["augment"]["illumination"]
    text = cfg.augment.text
    if not text.enabled and text == type(text)():
        del raw["augment"]["text"]
        return raw
    for name in ("synonyms", "wordnet_dir"):
        if getattr(text, name) == type(text).model_fields[name].default:
            del raw["augment"]["text"][name]
    return raw
