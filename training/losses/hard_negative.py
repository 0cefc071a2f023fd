"""Hard-negative CLIP: symmetric InfoNCE with hardness-weighted, debiased negatives."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.losses._checks import check_non_negative, check_pair
from training.losses.clip import ClipLoss, append_negatives
from training.losses.siblings import check_siblings


class HardNegativeClipLoss(ClipLoss):
    r"""CLIP's symmetric loss with Robinson et al.'s hard-negative estimator in both directions.

    Robinson, Chuang, Sra and Jegelka, "Contrastive Learning with Hard Negative
    Samples", ICLR 2021 (the hard-sampling objective of Sec. 3 and its estimator,
    PyTorch-style in Fig. 13, Appendix D), whose tau+ debiasing and floor come from
    Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020.

    For one anchor with positive logit p = s<x, y+> and K negative logits
    l_1..l_K (l_k = s<x, y_k>, s the exponentiated scale, i.e. 1/temperature):

        w_k   = exp(beta l_k) / (1/K sum_j exp(beta l_j))            importance weights, mean 1
        Ng    = (sum_k w_k exp(l_k) - tau+ K exp(p)) / (1 - tau+)    debiased, reweighted negatives
        Ng    = max(Ng, K exp(-s))                                   floor: every negative at cosine -1
        loss  = -log[ exp(p) / (exp(p) + Ng) ]

    Why: uniform in-batch negatives are mostly easy and give almost no gradient;
    tilting the negative distribution towards the anchor (beta) concentrates the
    push on the confusable ones, while tau+ subtracts the expected share of
    negatives that are really positives (same-class items sampled as
    negatives). The debiased sum can go negative, hence the paper's floor at its
    smallest possible value. With beta = 0 and tau+ = 0 this is exactly CLIP's
    InfoNCE (the floor never binds then: K terms, each >= e^-s, sum to >= K e^-s).

    As in the paper and its reference code, beta multiplies the *logit* (the
    similarity divided by the temperature), so the tilt on cosine is beta * s.
    The paper's defaults (beta = 1, tau+ = 0.1: the reference code's STL10
    setting and the best of its released beta sweep, SimCLR at temperature 0.5,
    i.e. s = 2) are kept; CLIP's scale starts at 14.3 and
    may reach 100, a much sharper tilt, so for cross-modal fine-tuning a beta
    near 2 / s (e.g. 0.1-0.2) reproduces the paper's effective hardness.

    Applied to image->text rows (negatives: the other texts, the shared
    ``extra_text_features`` and the per-image ``text_negatives_per_image``) and to
    text->image rows (negatives: the other images and ``image_negatives_per_text``);
    the two are averaged as in CLIP. The temperature handling (``logit_scale``,
    its clip at 100) is :class:`ClipLoss`'s.

    Optional ``siblings`` (an (N, N) bool mask, :mod:`training.losses.siblings`) take
    same-concept rows out of each other's in-batch negatives: anchor i's K is then the
    count of its remaining negatives (K_i), in the weights' mean and in the floor. The
    shared and per-query extra negatives (queue, perturbed captions, MoCHi points) carry
    no concept and stay negatives. An anchor left with no negative contributes 0.

    Args:
        beta: concentration >= 0; 0 weighs negatives uniformly. Paper: 1.0.
        tau_plus: class prior tau+ in [0, 1); 0 disables debiasing. Paper: 0.1.
        init_logit_scale, max_logit_scale, learnable, normalize: as :class:`ClipLoss`.
    """

    def __init__(
        self,
        beta: float = 1.0,
        tau_plus: float = 0.1,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float | None = 100.0,
        learnable: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__(init_logit_scale, max_logit_scale, learnable, normalize)
        check_non_negative("beta", beta)
        check_non_negative("tau_plus", tau_plus)
        if tau_plus >= 1:
            raise ValueError(f"tau_plus is a probability in [0, 1), got {tau_plus!r}")
        self.beta, self.tau_plus = float(beta), float(tau_plus)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float | None = None,
        extra_text_features: torch.Tensor | None = None,
        text_negatives_per_image: torch.Tensor | None = None,
        image_negatives_per_text: torch.Tensor | None = None,
        extra_image_features: torch.Tensor | None = None,
        *,
        siblings: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            image_features: (N, D); row i is paired with ``text_features`` row i.
            text_features: (N, D).
            logit_scale: optional exponentiated scale s used instead of the
                module's own; the clip still applies.
            extra_text_features: optional (M, D) texts that are negatives for
                every image (e.g. NegCLIP perturbed captions).
            text_negatives_per_image: optional (N, S, D); row i holds S negatives
                for image i only (e.g. MoCHi points from
                :func:`training.negatives.synthesised.mix_hard_negatives`).
            image_negatives_per_text: optional (N, S', D); the same for texts.
            extra_image_features: optional (M', D) images that are negatives for
                every text (e.g. a queue of momentum-encoded image keys).
            siblings: optional (N, N) bool; True where rows i and j are of the same
                concept: neither is the other's negative (diagonal ignored).

        Returns:
            ``{"contrastive_loss": scalar}``.
        """
        check_pair(image_features, text_features, "image_features and text_features")
        n, d = image_features.shape
        texts = append_negatives(text_features, extra_text_features, "extra_text_features")
        for name, per_query in (
            ("text_negatives_per_image", text_negatives_per_image),
            ("image_negatives_per_text", image_negatives_per_text),
        ):
            if per_query is not None and (per_query.ndim != 3 or per_query.shape[::2] != (n, d)):
                raise ValueError(f"{name} must be ({n}, S, {d}), got {tuple(per_query.shape)}")
        if extra_image_features is not None and (extra_image_features.ndim != 2 or extra_image_features.shape[1] != d):
            raise ValueError(f"extra_image_features must be (M', {d}), got {tuple(extra_image_features.shape)}")
        if self.normalize:
            image_features = F.normalize(image_features, dim=-1)
            texts = F.normalize(texts, dim=-1)
            if extra_image_features is not None:
                extra_image_features = F.normalize(extra_image_features, dim=-1)
            if text_negatives_per_image is not None:
                text_negatives_per_image = F.normalize(text_negatives_per_image, dim=-1)
            if image_negatives_per_text is not None:
                image_negatives_per_text = F.normalize(image_negatives_per_text, dim=-1)

        s = self.scale(logit_scale)
        logits = s * image_features @ texts.T  # (N, N + M)
        positives = logits.diagonal()  # (N,)
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=logits.device)

        # Row i: the N - 1 other texts, the M shared extras, then image i's own S.
        i2t = [logits[:, :n][off_diagonal].view(n, n - 1), logits[:, n:]]
        if text_negatives_per_image is not None:
            i2t.append(s * torch.einsum("nd,nsd->ns", image_features, text_negatives_per_image))
        t2i = [logits[:, :n].T[off_diagonal].view(n, n - 1)]
        if extra_image_features is not None:
            t2i.append(s * texts[:n] @ extra_image_features.T)
        if image_negatives_per_text is not None:
            t2i.append(s * torch.einsum("nd,nsd->ns", texts[:n], image_negatives_per_text))
        i2t_neg, t2i_neg = torch.cat(i2t, dim=1), torch.cat(t2i, dim=1)

        valid_i2t = valid_t2i = None
        if (mask := check_siblings(siblings, n)) is not None:
            in_batch = ~mask[off_diagonal].view(n, n - 1)  # True: a real negative
            valid_i2t = torch.ones_like(i2t_neg, dtype=torch.bool)
            valid_i2t[:, : n - 1] = in_batch
            valid_t2i = torch.ones_like(t2i_neg, dtype=torch.bool)
            valid_t2i[:, : n - 1] = ~mask.T[off_diagonal].view(n, n - 1)
        loss_i2t = self._anchor_losses(positives, i2t_neg, s, valid_i2t)
        loss_t2i = self._anchor_losses(positives, t2i_neg, s, valid_t2i)
        return {"contrastive_loss": (loss_i2t.mean() + loss_t2i.mean()) / 2}

    def _anchor_losses(
        self, positive: torch.Tensor, negatives: torch.Tensor, s: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-anchor loss from (N,) positive and (N, K) negative logits, in log space.

        ``valid`` (N, K) bool marks the negatives that count (default: all); anchor i uses its
        K_i = valid[i].sum() of them. exp(l) overflows float32 once l > 88 (s reaches 100), so
        the sums are kept as logs and everything is divided by exp(m) before leaving log space.
        """
        if negatives.shape[1] == 0:  # a batch of one with no extra negatives: nothing to contrast
            return torch.zeros_like(positive)
        if valid is None:
            k = torch.full_like(positive, float(negatives.shape[1]))
            tilted, weights = (self.beta + 1) * negatives, self.beta * negatives
        else:
            k = valid.sum(dim=1).to(positive.dtype)
            never = torch.tensor(float("-inf"), dtype=negatives.dtype, device=negatives.device)
            tilted = torch.where(valid, (self.beta + 1) * negatives, never)
            weights = torch.where(valid, self.beta * negatives, never)
        some = k > 0
        safe_k = torch.where(some, k, torch.ones_like(k))
        # log sum_k w_k e^{l_k} = log K + logsumexp((beta+1) l) - logsumexp(beta l)
        log_reweighted = torch.log(safe_k) + torch.logsumexp(tilted, dim=1) - torch.logsumexp(weights, dim=1)
        log_reweighted = torch.where(some, log_reweighted, positive.detach())
        m = torch.maximum(positive, log_reweighted).detach()  # any shift is exact; this one is safe
        positive_term = torch.exp(positive - m)
        ng = (torch.exp(log_reweighted - m) - self.tau_plus * k * positive_term) / (1 - self.tau_plus)
        ng = torch.maximum(ng, k * torch.exp(-s - m))
        loss = m + torch.log(positive_term + ng) - positive
        return torch.where(some, loss, torch.zeros_like(loss))
