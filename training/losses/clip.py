"""CLIP: symmetric InfoNCE between paired image and text features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.losses._checks import check_finite, check_pair, check_positive
from training.losses.siblings import check_siblings


class ClipLoss(nn.Module):
    r"""Symmetric InfoNCE over a batch of N (image, text) pairs.

    Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", ICML 2021 (CLIP), Sec. 2.5 and the pseudo-code of Fig. 3.

    With L2-normalised image features x_i, text features y_j and scale s = exp(t):

        l_ij  = s <x_i, y_j>
        L_i2t = -1/N sum_i log[ exp(l_ii) / (sum_j exp(l_ij) + sum_k exp(s <x_i, e_k>)) ]
        L_t2i = -1/N sum_j log[ exp(l_jj) / sum_i exp(l_ij) ]
        L     = (L_i2t + L_t2i) / 2

    The e_k are optional extra text negatives (m of them), e.g. NegCLIP's perturbed
    captions (Yuksekgonul et al., ICLR 2023). They are extra columns of the
    image->text softmax only: no image is their positive, so they have no row.

    Optional ``siblings`` (an (N, N) bool mask, :mod:`training.losses.siblings`) leave
    same-concept pairs out of both softmaxes: with S_i the siblings of row i, the sums
    above run over j not in S_i (and i not in S_j). They are neither positives nor
    negatives; every anchor keeps its own pair as its one positive.

    The log-scale t starts at ln(1/0.07) (temperature 0.07, after Wu et al. 2018)
    and, as in the paper, s is clipped at 100 "to prevent scaling the logits by
    more than 100". The clip is applied in `forward`, so a scale past it gets no
    gradient; trainers may also clamp the parameter in place after each step, as
    open_clip does.

    Conventions follow open_clip: ``self.logit_scale`` holds t (the log), while
    ``forward(logit_scale=...)`` takes an already exponentiated s, which is what
    open_clip models return, so ``loss(**model(images, texts))`` works.

    Args:
        init_logit_scale: initial t = ln(1/temperature). Paper: ln(1/0.07).
        max_logit_scale: clip for s (not t); ``None`` disables it. Paper: 100.
        learnable: t is an ``nn.Parameter`` (else a buffer, still in the state dict).
        normalize: L2-normalise the features first; pass False if they already are.
    """

    def __init__(
        self,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float | None = 100.0,
        learnable: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        check_finite("init_logit_scale", init_logit_scale)
        if max_logit_scale is not None:
            check_positive("max_logit_scale", max_logit_scale)
            if init_logit_scale > math.log(max_logit_scale):
                raise ValueError(
                    f"init_logit_scale={init_logit_scale:.4g} starts past the clip: exp of it is "
                    f"{math.exp(init_logit_scale):.4g} > max_logit_scale={max_logit_scale}"
                )
        self.max_logit_scale = max_logit_scale
        self.normalize = normalize
        t = torch.tensor(float(init_logit_scale))
        if learnable:
            self.logit_scale = nn.Parameter(t)
        else:
            self.register_buffer("logit_scale", t)

    def scale(self, logit_scale: torch.Tensor | float | None = None) -> torch.Tensor:
        """The multiplier s in use: exp(self.logit_scale), or the given one, clipped."""
        s = self.logit_scale.exp() if logit_scale is None else torch.as_tensor(logit_scale)
        if self.max_logit_scale is not None:
            s = s.clamp(max=self.max_logit_scale)
        return s

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float | None = None,
        extra_text_features: torch.Tensor | None = None,
        *,
        siblings: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            image_features: (N, D); row i is paired with ``text_features`` row i.
            text_features: (N, D).
            logit_scale: optional exponentiated scale s (scalar) used instead of
                the module's own; the clip still applies.
            extra_text_features: optional (M, D) texts that are negatives for
                every image (image->text direction only).
            siblings: optional (N, N) bool; True where rows i and j are of the same
                concept: that pair is left out of both directions (diagonal ignored).

        Returns:
            ``{"contrastive_loss": scalar}``.
        """
        check_pair(image_features, text_features, "image_features and text_features")
        n, d = image_features.shape
        texts = append_negatives(text_features, extra_text_features, "extra_text_features")
        if self.normalize:
            image_features = F.normalize(image_features, dim=-1)
            texts = F.normalize(texts, dim=-1)

        logits_per_image = self.scale(logit_scale) * image_features @ texts.T  # (N, N + M)
        if (mask := check_siblings(siblings, n)) is not None:
            logits_per_image = mask_columns(logits_per_image, mask)
        logits_per_text = logits_per_image[:, :n].T  # (N, N): the extra texts have no row
        labels = torch.arange(n, device=image_features.device)
        loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        return {"contrastive_loss": loss}


def mask_columns(logits: torch.Tensor, siblings: torch.Tensor) -> torch.Tensor:
    """``logits`` (N, N + M) with the sibling entries of its first N columns at -inf (out of any softmax)."""
    n = siblings.shape[0]
    full = torch.zeros_like(logits, dtype=torch.bool)
    full[:, :n] = siblings
    return logits.masked_fill(full, float("-inf"))


def append_negatives(features: torch.Tensor, extra: torch.Tensor | None, name: str) -> torch.Tensor:
    """``features`` (N, D) followed by the (M, D) ``extra`` negatives, checked for shape."""
    if extra is None:
        return features
    d = features.shape[1]
    if extra.ndim != 2 or extra.shape[1] != d:
        raise ValueError(f"{name} must be (M, {d}), got {tuple(extra.shape)}")
    return torch.cat([features, extra])
