"""Self-supervised image objectives (SimCLR, BYOL, Barlow Twins) as a weighted auxiliary.

Each runs on two augmented views of the same images through the image tower
and a small projector (the paper's "g"), so the auxiliary shapes the tower
without pulling the shared image–text embedding towards its own geometry.
With ``image_only`` the same objective alone adapts the image tower on
images that have no captions.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import SSLConfig
from training.losses import BarlowTwinsLoss, BYOLLoss, NTXentLoss
from training.losses.moco import MomentumEncoder, cosine_momentum


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out)
    )


class _Online(nn.Module):
    """Image tower followed by the projector: what BYOL's target network copies."""

    def __init__(self, visual: nn.Module, projector: nn.Module):
        super().__init__()
        self.visual = visual
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.visual(x))


class ImageSSL(nn.Module):
    def __init__(self, cfg: SSLConfig, embed_dim: int, visual: nn.Module):
        super().__init__()
        if cfg.kind is None:
            raise ValueError("ImageSSL needs ssl.kind")
        self.cfg = cfg
        self.projector = _mlp(embed_dim, cfg.projector_hidden, cfg.projector_dim)
        self.loss: nn.Module
        if cfg.kind == "simclr":
            self.loss = NTXentLoss(temperature=cfg.temperature)
        elif cfg.kind == "barlow_twins":
            self.loss = BarlowTwinsLoss(lambda_offdiag=cfg.lambda_offdiag)
        else:
            self.loss = BYOLLoss()
            self.predictor = _mlp(cfg.projector_dim, cfg.projector_hidden, cfg.projector_dim)
            # The target follows (tower + projector) by EMA; kept out of the optimiser.
            self.target = MomentumEncoder(_Online(visual, self.projector), momentum=cfg.momentum)

    def trainable_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.target.parameters()} if hasattr(self, "target") else set()
        return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

    def forward(self, visual: nn.Module, view_a: torch.Tensor, view_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms for two (N, 3, H, W) views of the same N images."""
        za, zb = self.projector(visual(view_a)), self.projector(visual(view_b))
        if self.cfg.kind == "byol":
            terms = self.loss(self.predictor(za), self.predictor(zb), self.target(view_a), self.target(view_b))
        else:
            terms = self.loss(za, zb)
        return {k: self.cfg.weight * v for k, v in terms.items()}

    @torch.no_grad()
    def after_step(self, visual: nn.Module, step: int, total_steps: int) -> None:
        """BYOL: move the target towards the online network, momentum on a cosine schedule to 1."""
        if self.cfg.kind == "byol":
            m = cosine_momentum(step, total_steps, base=self.cfg.momentum)
            self.target.update(_Online(visual, self.projector), momentum=m)
