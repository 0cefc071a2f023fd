"""Barlow Twins: drive the cross-correlation of two views' embeddings to the identity."""

from __future__ import annotations

import torch
from torch import nn

from training.losses._checks import check_non_negative, check_pair


class BarlowTwinsLoss(nn.Module):
    r"""Invariance on the diagonal, redundancy reduction off it.

    Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", ICML 2021, Eq. 1-2 and Algorithm 1.

    Each embedding dimension is standardised along the batch (zero mean, unit
    variance, as BatchNorm without affine parameters does), then

        C_ij = 1/N sum_b za_bi zb_bj
        L    = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2

    The variance is the biased one (divide by N) and so is C, which makes C_ij
    exactly the paper's cosine of the centred columns (with eps = 0), makes
    identical views give C_ii = 1 exactly rather than (N-1)/N, and keeps C a
    plain mean over samples: with globally standardised embeddings, each rank's
    sum divided by the global N all-reduces to the global C (single process here).

    Args:
        lambda_offdiag: weight of the off-diagonal term. Paper: 5e-3.
        eps: added to the variance before the square root, as BatchNorm does (1e-5).
    """

    def __init__(self, lambda_offdiag: float = 5e-3, eps: float = 1e-5) -> None:
        super().__init__()
        check_non_negative("lambda_offdiag", lambda_offdiag)
        check_non_negative("eps", eps)
        self.lambda_offdiag = lambda_offdiag
        self.eps = eps

    def _standardise(self, z: torch.Tensor) -> torch.Tensor:
        centred = z - z.mean(dim=0)
        return centred / torch.sqrt(centred.pow(2).mean(dim=0) + self.eps)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            z_a: (N, D) embeddings of the first view; N >= 2 (a variance is needed).
            z_b: (N, D) embeddings of the second view, row-aligned with ``z_a``.

        Returns:
            ``{"barlow_twins_loss": scalar}``.
        """
        check_pair(z_a, z_b, "z_a and z_b")
        n = z_a.shape[0]
        if n < 2:
            raise ValueError("Barlow Twins needs a batch of at least 2 to standardise along it")
        c = self._standardise(z_a).T @ self._standardise(z_b) / n  # (D, D)
        on_diag = (1 - torch.diagonal(c)).pow(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return {"barlow_twins_loss": on_diag + self.lambda_offdiag * off_diag}
