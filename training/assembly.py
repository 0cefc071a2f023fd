"""Everything a fine-tuning run is made of, built in one place from its configuration."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from crossmodal_kernel import atomic
from crossmodal_kernel.distributed import DistInfo
from crossmodal_kernel.loading import LoadedModel, load_model
from training.config import TrainConfig
from training.locking import apply_locks
from training.negatives.provider import HardNegatives
from training.optim import make_loss, make_optimizer, warmup_cosine
from training.pairs import Pair, PairDataset, load_pairs, train_transform
from training.sources import SourceReport
from training.ssl import ImageSSL
from training.text_augment import TextAugmenter
from training.validation import drop_noisy_pairs

log = logging.getLogger(__name__)


@dataclass
class TrainParts:
    """The model and everything that trains it; built once per run by :func:`build_parts`."""

    cfg: TrainConfig
    dist: DistInfo
    loaded: LoadedModel
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    dataset: PairDataset
    base_state: dict[str, torch.Tensor]  # the starting weights, for WiSE-FT
    loss_fn: torch.nn.Module
    temperature: Callable[[], dict]
    ssl: ImageSSL | None
    hard: HardNegatives
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    skipped_rows: dict = field(default_factory=dict)
    noisy_pairs: dict | None = None

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, enabled=self.use_amp)

    def trainable_state(self) -> dict:
        """What a checkpoint holds besides the loop's own counters (see ``training.resume``)."""
        return {
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "ssl": self.ssl.state_dict() if self.ssl is not None else None,
            "hard_negatives": self.hard.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_trainable_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        if self.ssl is not None:
            self.ssl.load_state_dict(state["ssl"])
        self.hard.load_state_dict(state["hard_negatives"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def build_parts(cfg: TrainConfig, dist: DistInfo) -> TrainParts:
    """Data, model, loss, optimiser and the hard-negative and self-supervised machinery of ``cfg``."""
    if cfg.data.manifest is None:
        raise ValueError("data.manifest is required (or run `crossmodal finetune --from-db`)")
    if cfg.optim.batch_size % dist.world_size:
        raise ValueError(f"batch_size {cfg.optim.batch_size} must divide evenly across {dist.world_size} ranks")
    if dist.world_size > 1 and cfg.hard_negatives.perturb_captions:
        raise ValueError("hard_negatives.perturb_captions is not supported under torchrun yet")
    report = SourceReport()
    image_only = cfg.ssl.image_only
    train_pairs, val_pairs = load_pairs(
        cfg.data.manifest,
        cfg.data.val_fraction,
        cfg.data.split_column,
        report,
        images_only=image_only,
        group_column=cfg.data.group_column,
    )
    if image_only:
        val_pairs = []  # no captions to measure retrieval with
    if len(train_pairs) < cfg.optim.batch_size:
        raise ValueError(f"{len(train_pairs)} training pairs is fewer than one batch of {cfg.optim.batch_size}")
    loaded = load_model(cfg.model, dist.device if dist.world_size > 1 else cfg.device)
    noisy = None
    if cfg.data.drop_noisy_fraction:
        train_pairs, noisy = drop_noisy_pairs(loaded, train_pairs, cfg.data.drop_noisy_fraction)
        if dist.is_main:
            atomic.write_text(Path(cfg.output_dir) / "noisy_pairs.json", json.dumps(noisy, indent=2))
    model, device = loaded.model, loaded.device
    base_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    apply_locks(model, cfg)
    loss_fn, temperature = make_loss(cfg, model)
    loss_fn.to(device)
    ssl = ImageSSL(cfg.ssl, loaded.embed_dim, model.visual).to(device) if cfg.ssl.kind else None
    hard = HardNegatives(cfg, model, loaded.embed_dim, device)
    optimizer = make_optimizer(model, cfg)
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        optimizer.add_param_group({"params": loss_params, "weight_decay": 0.0})
    if ssl is not None:
        optimizer.add_param_group({"params": ssl.trainable_parameters(), "weight_decay": cfg.optim.weight_decay})
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.optim.warmup_steps, cfg.optim.steps))
    use_amp = cfg.optim.amp and device.type == "cuda"
    pp = model.visual.preprocess_cfg
    dataset = PairDataset(
        train_pairs,
        train_transform(cfg.augment, loaded.image_size, pp["mean"], pp["std"]),
        cfg.seed,
        views=2 if ssl is not None else 1,
        text_augment=TextAugmenter(cfg.augment.text, cfg.seed) if cfg.augment.text.enabled else None,
    )
    return TrainParts(
        cfg=cfg,
        dist=dist,
        loaded=loaded,
        train_pairs=train_pairs,
        val_pairs=val_pairs,
        dataset=dataset,
        base_state=base_state,
        loss_fn=loss_fn,
        temperature=temperature,
        ssl=ssl,
        hard=hard,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        use_amp=use_amp,
        skipped_rows=dict(report.skipped),
        noisy_pairs=noisy,
    )
