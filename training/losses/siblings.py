"""Same-concept rows in a contrastive batch: neither positives nor negatives of each other.

A contrastive loss treats every other row of the batch as a negative. When two rows show the same
concept (the same emoji drawn by two design houses, or two images with the identical caption),
pushing them apart teaches the heads to separate what the evaluation counts as the same answer:
a *false negative* (Chuang et al., 2020, "Debiased Contrastive Learning", Sec. 1; the essay in
``background/`` calls it the false-negative problem). Two remedies:

- **mask** (what the losses here do): drop the sibling pairs from the loss. Each anchor's positive
  stays its own pair; siblings simply stop being negatives. The objective is still one positive
  per anchor, the gradient on every other pair is unchanged in form, and a batch without siblings
  trains exactly as before.
- **multi-positive** (Khosla et al., 2020, "Supervised Contrastive Learning"): count siblings as
  positives too. It also *pulls* siblings together, but it changes the target distribution of
  every anchor with a sibling, and with caption keywords shared by many concepts ("face") it would
  pull unrelated images together. :mod:`training.bootstrap` offers it as an ablation
  (``siblings="positive"``); the fine-tuning losses implement the mask.

A mask is an (N, N) bool tensor: ``siblings[i, j]`` is True when row i and row j are of the same
group; its diagonal is ignored (a row is its own positive). :func:`sibling_mask` builds one from
per-row keys.
"""

from __future__ import annotations

import torch


def sibling_mask(*keys: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: rows i != j that share a value in any of the (N,) integer ``keys`` (negative values: none)."""
    if not keys:
        raise ValueError("sibling_mask needs at least one key tensor")
    n = keys[0].shape[0]
    out = torch.zeros(n, n, dtype=torch.bool, device=keys[0].device)
    for key in keys:
        if key.ndim != 1 or key.shape[0] != n:
            raise ValueError(f"every key must be ({n},), got {tuple(key.shape)}")
        out |= (key[:, None] == key[None, :]) & (key[:, None] >= 0)
    out.fill_diagonal_(False)
    return out


def check_siblings(siblings: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``siblings`` as an (n, n) bool tensor with a False diagonal, or None; a wrong shape is a ValueError."""
    if siblings is None:
        return None
    if siblings.shape != (n, n) or siblings.dtype != torch.bool:
        raise ValueError(f"siblings must be a ({n}, {n}) bool tensor, got {tuple(siblings.shape)} {siblings.dtype}")
    return siblings & ~torch.eye(n, dtype=torch.bool, device=siblings.device)


def sibling_share(siblings: torch.Tensor) -> float:
    """The share of rows that have at least one sibling in the batch."""
    return float(siblings.any(dim=1).float().mean()) if len(siblings) else 0.0
