"""SigLIP: an independent binary (sigmoid) loss on every image/text pair."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.losses._checks import check_finite, check_pair, check_positive_int
from training.losses.siblings import check_siblings


class SigLipLoss(nn.Module):
    r"""Pairwise sigmoid loss over a batch of N (image, text) pairs.

    Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023 (SigLIP),
    Sec. 3.2 and Algorithm 1.

    With L2-normalised x_i (images), y_j (texts), scale s = exp(t), bias b and
    labels z_ij = +1 if i == j else -1:

        L = -1/N sum_i sum_j log sigma( z_ij (s <x_i, y_j> + b) )

    i.e. a sum over all N^2 pairs divided by the batch size, as in the paper.
    Each pair is its own binary problem, so no softmax over the batch is needed.
    Optional ``siblings`` (an (N, N) bool mask, :mod:`training.losses.siblings`) drop
    same-concept pairs from the sum: they are neither positives nor negatives (the
    divisor stays N, the number of anchors, as in the paper).

    Paper initialisation from scratch: t = ln 10 and b = -10. The negative bias
    matters because N^2 - N of the pairs are negatives: it keeps the first steps
    from being spent pushing every pair apart. For small fine-tuning batches use
    :meth:`for_batch_size`. To fine-tune a pretrained model, either pass its values
    (``init_logit_scale=float(model.logit_scale)``, ``init_logit_bias=float(model.logit_bias)``)
    or, better, pass the model's own tensors to ``forward`` so they train and are
    saved with the model.

    Conventions follow open_clip: ``self.logit_scale`` holds t (the log),
    ``forward(logit_scale=...)`` takes the exponentiated s, as open_clip models
    return it, so ``loss(**model(images, texts))`` works. No clip is applied to s:
    the paper has none.

    Args:
        init_logit_scale: initial t. Paper: ln 10.
        init_logit_bias: initial b. Paper: -10.
        learnable: t and b are ``nn.Parameter`` s (else buffers, still in the state dict).
        normalize: L2-normalise the features first; pass False if they already are.
    """

    def __init__(
        self,
        init_logit_scale: float = math.log(10),
        init_logit_bias: float = -10.0,
        learnable: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        init_logit_scale, init_logit_bias = float(init_logit_scale), float(init_logit_bias)
        check_finite("init_logit_scale", init_logit_scale)
        check_finite("init_logit_bias", init_logit_bias)
        self.normalize = normalize
        t, b = torch.tensor(init_logit_scale), torch.tensor(init_logit_bias)
        if learnable:
            self.logit_scale, self.logit_bias = nn.Parameter(t), nn.Parameter(b)
        else:
            self.register_buffer("logit_scale", t)
            self.register_buffer("logit_bias", b)

    @classmethod
    def for_batch_size(cls, batch_size: int, **kwargs) -> SigLipLoss:
        r"""A loss whose bias starts at b = -ln(N - 1) for batches of N pairs.

        At initialisation the features are nearly orthogonal, so every logit is
        about b and every pair is predicted positive with probability sigma(b).
        The true fraction of positives is N / N^2 = 1/N, and sigma(b) = 1/N gives
        b = ln((1/N) / (1 - 1/N)) = -ln(N - 1). That constant also minimises the
        initial loss (its gradient in b is zero there), so the early steps learn
        features instead of correcting the base rate. For the paper's 32k batch
        this gives -10.4, which is its -10; for N = 64 it gives -4.1, where -10
        would start every positive at a loss of about 10.
        """
        check_positive_int("batch_size", batch_size)
        if batch_size < 2:
            raise ValueError("batch_size must be >= 2: with one pair there are no negatives to balance")
        if "init_logit_bias" in kwargs:
            raise ValueError("for_batch_size sets init_logit_bias itself; use the constructor to choose one")
        return cls(init_logit_bias=-math.log(batch_size - 1), **kwargs)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float | None = None,
        logit_bias: torch.Tensor | float | None = None,
        *,
        siblings: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            image_features: (N, D); row i is paired with ``text_features`` row i.
            text_features: (N, D).
            logit_scale: optional exponentiated scale s (scalar), instead of the module's.
            logit_bias: optional bias b (scalar), instead of the module's.
            siblings: optional (N, N) bool; True where rows i and j are of the same
                concept: the pair (i, j) is left out of the sum (diagonal ignored).

        Returns:
            ``{"contrastive_loss": scalar}``.
        """
        check_pair(image_features, text_features, "image_features and text_features")
        if self.normalize:
            image_features = F.normalize(image_features, dim=-1)
            text_features = F.normalize(text_features, dim=-1)
        s = self.logit_scale.exp() if logit_scale is None else logit_scale
        b = self.logit_bias if logit_bias is None else logit_bias

        n = image_features.shape[0]
        logits = s * image_features @ text_features.T + b  # (N, N)
        eye = torch.eye(n, device=logits.device, dtype=logits.dtype)
        labels = 2 * eye - 1  # +1 on the diagonal (the positives), -1 elsewhere
        terms = -F.logsigmoid(labels * logits)
        if (mask := check_siblings(siblings, n)) is not None:
            terms = terms.masked_fill(mask, 0.0)
        loss = terms.sum() / n
        return {"contrastive_loss": loss}
