"""LiT-style tower locking, and which modules train: a locked subtree runs as at inference."""

from __future__ import annotations

from typing import Any

import torch
from open_clip.hf_model import HFTextEncoder

from training.config import TrainConfig


def apply_locks(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Lock towers through open_clip's own API; projection heads stay trainable."""
    clip: Any = model  # open_clip CLIP / CustomTextCLIP: its lock_*_tower methods are untyped
    if cfg.lock.image_unlocked_groups is not None:
        # BatchNorm statistics are frozen by set_train_mode instead of open_clip's freeze_bn_stats,
        # which swaps timm's BatchNormAct2d for a plain FrozenBatchNorm2d and so drops its
        # activation: EfficientNet's features collapse (every image matched one caption).
        clip.lock_image_tower(unlocked_groups=cfg.lock.image_unlocked_groups, freeze_bn_stats=False)
    if cfg.lock.text_unlocked_layers is not None:
        text = getattr(model, "text", None)
        if isinstance(text, HFTextEncoder) and cfg.lock.text_unlocked_layers > 0:
            _unlock_last_hf_layers(text, cfg.lock.text_unlocked_layers)
        else:
            clip.lock_text_tower(unlocked_layers=cfg.lock.text_unlocked_layers)


def _unlock_last_hf_layers(text: HFTextEncoder, n: int) -> None:
    """Freeze an HF text tower except its last ``n`` transformer layers (and the projection).

    open_clip's own partial lock needs a per-architecture table entry that BERT-family
    models (MiniLM included) lack, so the layer list is found structurally here.
    """
    body = getattr(text.transformer, "encoder", text.transformer)
    layers = next((getattr(body, a) for a in ("layer", "layers", "h") if hasattr(body, a)), None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"cannot find the layer list of {type(text.transformer).__name__} to unlock")
    if n > len(layers):
        raise ValueError(f"text_unlocked_layers={n} but the text tower has {len(layers)} layers")
    text.transformer.requires_grad_(False)
    for layer in list(layers)[-n:]:
        layer.requires_grad_(True)


def set_train_mode(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Train mode only where training happens.

    A fully locked subtree runs as at inference (a frozen feature extractor, as in LiT):
    its dropout off and its BatchNorm on running statistics. Otherwise a tower whose
    heads were fitted on clean features sees different ones in training (on the
    synthetic world, dropout alone lifted the loss of a good model from 0.06 to 5).
    ``lock.freeze_bn_stats`` keeps every BatchNorm on its statistics, and
    ``optim.dropout`` decides the unlocked layers' dropout, including attention dropout that a
    module applies itself, judged by its own training flag (Hugging Face's attention layers hold
    an ``nn.Dropout`` only for its rate).
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
        elif cfg.lock.freeze_bn_stats and isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
        elif not cfg.optim.dropout and isinstance(module, torch.nn.Dropout):
            module.eval()
        if not cfg.optim.dropout and isinstance(getattr(module, "dropout", None), torch.nn.Dropout):
            module.training = False  # this module only: its children keep their own mode
