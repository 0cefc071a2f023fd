"""MoCo: InfoNCE against a queue of momentum-encoded keys; uni- and cross-modal.

Also home of the momentum (EMA) helpers shared with BYOL's target network.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from training.losses._checks import check_pair, check_positive
from training.losses.memory_bank import MAX_QUEUE_SIZE, FeatureQueue


def queue_info_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with one positive key per query and shared negatives; keys get no gradient.

    ``query``/``key``: (N, D), normalised here; ``negatives``: (K, D), already
    normalised (the queues store normalised keys). K may be 0.
    """
    q = F.normalize(query, dim=-1)
    k = F.normalize(key.detach(), dim=-1)
    positive = (q * k).sum(dim=-1, keepdim=True)  # (N, 1)
    negative = q @ negatives.to(q).T  # (N, K)
    logits = torch.cat([positive, negative], dim=1) / temperature
    # The positive sits in column 0 of every row.
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


class MoCoLoss(nn.Module):
    r"""InfoNCE between queries and momentum keys, with a queue of past keys as negatives.

    He et al., "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020, Eq. 1 and Algorithm 1; defaults from MoCo v2 (Chen et al.,
    "Improved Baselines with Momentum Contrastive Learning", 2020).

    With normalised query q_i, its key k_i (the other view, from the momentum
    encoder, no gradient) and the queue of K earlier keys n_1..n_K:

        L = -1/N sum_i log[ exp(q_i . k_i / tau) / (exp(q_i . k_i / tau) + sum_j exp(q_i . n_j / tau)) ]

    After the loss is computed the batch's keys are enqueued, so they serve as
    negatives for the next batches. While the queue is empty (first step) the
    loss is 0.

    Temperature: MoCo v1 used 0.07; MoCo v2 raised it to 0.2 together with its
    MLP head, and that is the default here. Queue: 65,536 keys of dimension 128.

    Single process: under DDP, gather the keys of all ranks before they are
    enqueued (as MoCo does) — not done here.

    Args:
        temperature: tau > 0. MoCo v2: 0.2.
        queue_size: K, 1..65,536. MoCo: 65,536.
        dim: feature dimension. MoCo: 128.
    """

    def __init__(self, temperature: float = 0.2, queue_size: int = MAX_QUEUE_SIZE, dim: int = 128) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        self.temperature = temperature
        self.queue = FeatureQueue(queue_size, dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, enqueue: bool = True) -> dict[str, torch.Tensor]:
        """
        Args:
            query: (N, D) from the online encoder.
            key: (N, D) from the momentum encoder; row i is query i's positive.
            enqueue: add the keys to the queue afterwards (turn off for evaluation).

        Returns:
            ``{"moco_loss": scalar}``.
        """
        check_pair(query, key, "query and key")
        loss = queue_info_nce(query, key, self.queue.features(), self.temperature)
        if enqueue:
            self.queue.enqueue(F.normalize(key.detach(), dim=-1))
        return {"moco_loss": loss}


class CrossModalMoCoLoss(nn.Module):
    r"""MoCo across modalities: image queries against text keys, and the reverse.

    The MoCo objective (He et al., CVPR 2020; MoCo v2 defaults) with the two views
    being an image and its caption, as in the cross-modal momentum contrast of
    e.g. ALBEF (Li et al., NeurIPS 2021). Two queues, one per modality:

        L_i2t = InfoNCE(q_img, positive k_txt, negatives = text queue)
        L_t2i = InfoNCE(q_txt, positive k_img, negatives = image queue)
        L     = (L_i2t + L_t2i) / 2        (or L_i2t alone when symmetric=False)

    with InfoNCE as in :class:`MoCoLoss`. Keys come from momentum copies of the
    towers (:class:`MomentumEncoder`). Both directions use the queues as they were
    before this batch; then the text keys go to the text queue and the image keys
    to the image queue.

    Args:
        temperature: tau > 0. MoCo v2: 0.2.
        queue_size: K per modality, 1..65,536. MoCo: 65,536.
        dim: shared embedding dimension. MoCo: 128.
        symmetric: also train text queries against image keys.
    """

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = MAX_QUEUE_SIZE,
        dim: int = 128,
        symmetric: bool = True,
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        self.temperature = temperature
        self.symmetric = symmetric
        self.image_queue = FeatureQueue(queue_size, dim)
        self.text_queue = FeatureQueue(queue_size, dim)

    def forward(
        self,
        image_queries: torch.Tensor,
        text_queries: torch.Tensor | None,
        image_keys: torch.Tensor | None,
        text_keys: torch.Tensor,
        enqueue: bool = True,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            image_queries: (N, D) from the online image tower.
            text_queries: (N, D) from the online text tower (may be None if not symmetric).
            image_keys: (N, D) from the momentum image tower (may be None if not symmetric;
                then the image queue is not fed).
            text_keys: (N, D) from the momentum text tower; row i is caption i of image i.
            enqueue: add the keys to their queues afterwards.

        Returns:
            ``{"moco_loss": scalar}``.
        """
        check_pair(image_queries, text_keys, "image_queries and text_keys")
        if image_keys is not None:
            check_pair(image_keys, text_keys, "image_keys and text_keys")
        loss = queue_info_nce(image_queries, text_keys, self.text_queue.features(), self.temperature)
        if self.symmetric:
            if text_queries is None or image_keys is None:
                raise ValueError("symmetric=True needs text_queries and image_keys")
            check_pair(text_queries, image_keys, "text_queries and image_keys")
            t2i = queue_info_nce(text_queries, image_keys, self.image_queue.features(), self.temperature)
            loss = (loss + t2i) / 2
        if enqueue:
            self.text_queue.enqueue(F.normalize(text_keys.detach(), dim=-1))
            if image_keys is not None:
                self.image_queue.enqueue(F.normalize(image_keys.detach(), dim=-1))
        return {"moco_loss": loss}


def _check_momentum(m: float) -> None:
    if not (isinstance(m, int | float) and 0.0 <= m <= 1.0):
        raise ValueError(f"momentum must be in [0, 1], got {m!r}")


@torch.no_grad()
def update_momentum(model: nn.Module, ema_model: nn.Module, m: float = 0.999) -> None:
    """theta_ema <- m * theta_ema + (1 - m) * theta, parameter by parameter.

    MoCo Eq. 2 (m = 0.999) and BYOL's target update. Buffers (BatchNorm
    statistics) are left alone: the momentum network keeps its own, computed on
    the batches it sees, as in both papers' code.
    """
    _check_momentum(m)
    ema_params, params = list(ema_model.parameters()), list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError(f"models differ: {len(params)} parameters vs {len(ema_params)} in the EMA copy")
    for ema, p in zip(ema_params, params, strict=True):
        if ema.shape != p.shape:
            raise ValueError(f"parameter shapes differ: {tuple(p.shape)} vs {tuple(ema.shape)}")
        ema.lerp_(p.detach().to(ema), 1.0 - m)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's schedule: m = final - (final - base) * (cos(pi * step / total_steps) + 1) / 2.

    Grill et al. 2020, Sec. 3.3 (base 0.996, rising to 1 by the end). Steps past
    ``total_steps`` stay at ``final``.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    _check_momentum(base)
    _check_momentum(final)
    progress = min(step, total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


class MomentumEncoder(nn.Module):
    """A frozen copy of an online network that follows it by EMA (MoCo's key encoder, BYOL's target).

    ``update(online)`` after each optimiser step; calling it runs the copy under
    ``no_grad``. The online network is not stored, so it is not saved twice.

    Args:
        online: the network to copy (its current weights are the starting point).
        momentum: default m for ``update``. MoCo: 0.999 (BYOL: use ``cosine_momentum``).
    """

    def __init__(self, online: nn.Module, momentum: float = 0.999) -> None:
        super().__init__()
        _check_momentum(momentum)
        self.momentum = momentum
        self.module = copy.deepcopy(online).requires_grad_(False)

    def update(self, online: nn.Module, momentum: float | None = None) -> None:
        update_momentum(online, self.module, self.momentum if momentum is None else momentum)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)
