"""BYOL: predict the target network's projection of the other view; no negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.losses._checks import check_pair, check_positive_int


class BYOLLoss(nn.Module):
    r"""Symmetrised normalised-MSE between online predictions and target projections.

    Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised
    Learning", NeurIPS 2020, Eq. 2 and the symmetrised L^BYOL that follows it.

    For views a and b, online predictions p_a, p_b and target projections z_a, z_b
    (stop-gradient: the target is trained only through its EMA):

        ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)
        L = 1/N sum_i [ (2 - 2 cos(p_a_i, z_b_i)) + (2 - 2 cos(p_b_i, z_a_i)) ]

    The paper's sum of the two terms (not their mean), averaged over the batch:
    0 when predictions and targets align, 8 when they point opposite ways.

    The target network is a :class:`training.losses.moco.MomentumEncoder` driven by
    :func:`training.losses.moco.cosine_momentum` (base 0.996), the same helpers MoCo uses.
    """

    def forward(
        self,
        prediction_a: torch.Tensor,
        prediction_b: torch.Tensor,
        target_a: torch.Tensor,
        target_b: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            prediction_a: (N, D) online prediction q(g(f(view a))).
            prediction_b: (N, D) online prediction of view b.
            target_a: (N, D) target projection of view a (detached here).
            target_b: (N, D) target projection of view b.

        Returns:
            ``{"byol_loss": scalar}``; prediction_a is matched with target_b and
            prediction_b with target_a.
        """
        check_pair(prediction_a, prediction_b, "prediction_a and prediction_b")
        check_pair(target_a, target_b, "target_a and target_b")
        check_pair(prediction_a, target_b, "predictions and targets")

        def term(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)

        return {"byol_loss": (term(prediction_a, target_b) + term(prediction_b, target_a)).mean()}


class BYOLPredictionHead(nn.Sequential):
    """Linear -> BatchNorm -> ReLU -> Linear, BYOL's predictor q (and, with input_dim=2048, its projector g).

    Grill et al. 2020, Sec. 3.3: hidden size 4096, output 256.

    Args:
        input_dim: features in. BYOL predictor: 256 (the projector's output).
        hidden_dim: BYOL: 4096.
        output_dim: BYOL: 256.
    """

    def __init__(self, input_dim: int = 256, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        check_positive_int("input_dim", input_dim)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("output_dim", output_dim)
        super().__init__(
            nn.Linear(input_dim, hidden_dim, bias=False),  # BatchNorm's shift makes a bias redundant
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, output_dim),
        )
