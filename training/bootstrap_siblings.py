"""Which rows of a LiT bootstrap are siblings, and the losses that respect them.

Two rows are siblings when they show one concept (a group key, e.g. an emoji's codepoint: another
house's drawing of it) or carry the same caption. The bootstrap's losses leave siblings out of each
other's negatives (:mod:`training.losses.siblings`), may count them as positives, and may align the
image embeddings of sibling drawings. Keys are integer tensors, (n, G): one column per kind of key,
-1 for none.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from training.losses.siblings import check_siblings, sibling_mask


def clip_loss(
    img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, siblings: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE over the batch (Radford et al., 2021); ``siblings`` (N, N) pairs are left out
    of both softmaxes (:mod:`training.losses.siblings`)."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    if (mask := check_siblings(siblings, len(img))) is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    labels = torch.arange(len(img))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def multi_positive_loss(
    img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor, masked: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE where an anchor's siblings are positives too (Khosla et al., 2020, L_out):
    -1/|P_i| sum_{p in P_i} log softmax_p, with P_i = {i} and ``positives[i]``; ``masked`` pairs are left out."""
    logits = logit_scale.exp().clamp(max=100) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    eye = torch.eye(len(img), dtype=torch.bool)
    pos = positives | eye
    logits = logits.masked_fill(masked & ~pos, float("-inf"))
    total = img.new_zeros(())
    for lg in (logits, logits.T):
        logp = lg.log_softmax(dim=1).masked_fill(~pos, 0.0)
        total = total + (-(logp.sum(1) / pos.sum(1))).mean()
    return total / 2


def image_alignment_loss(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, siblings: torch.Tensor | None
) -> torch.Tensor:
    """InfoNCE between the image embeddings of two drawings (or views) of each row's concept, so that the
    image head maps another house's drawing where it maps this one; other siblings are masked out."""
    return clip_loss(a, b, logit_scale, siblings)


def as_group_keys(groups: torch.Tensor | None, n: int) -> torch.Tensor | None:
    if groups is None:
        return None
    keys = torch.as_tensor(groups, dtype=torch.long)
    keys = keys.view(-1, 1) if keys.ndim == 1 else keys
    if keys.ndim != 2 or len(keys) != n:
        raise ValueError(f"groups needs one row of keys per image ({n}), got shape {tuple(keys.shape)}")
    return keys


def batch_mask(keys: torch.Tensor | None, idx: torch.Tensor | None) -> torch.Tensor | None:
    if keys is None:
        return None
    rows = keys if idx is None else keys[idx]
    return sibling_mask(*rows.T)


def union(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return a if b is None else b
    return a | b


def sibling_lists(keys: torch.Tensor | None) -> list[list[int]]:
    """Per image, the other images that share one of its group keys."""
    if keys is None:
        raise ValueError("image_align needs groups (which images show the same concept)")
    members: dict[tuple[int, int], list[int]] = {}
    for i, row in enumerate(keys.tolist()):
        for c, k in enumerate(row):
            if k >= 0:
                members.setdefault((c, k), []).append(i)
    out = []
    for i, row in enumerate(keys.tolist()):
        found = {j for c, k in enumerate(row) if k >= 0 for j in members[(c, k)] if j != i}
        out.append(sorted(found))
    return out


def draw_partners(partners: list[list[int]], image_rows: torch.Tensor, n: int, views: int, gen) -> torch.Tensor:
    """Per image, the feature row of a random sibling drawing (in a random view), or of another view of
    itself when it has no sibling and there are views; -1 when neither exists."""
    out = torch.full((n,), -1, dtype=torch.long)
    pick = torch.rand(n, generator=gen)
    view = torch.randint(views, (n,), generator=gen)
    for i, sibs in enumerate(partners):
        if sibs:
            out[i] = int(view[i]) * n + sibs[int(pick[i] * len(sibs))]
        elif views > 1:
            other = (int(image_rows[i]) // n + 1 + int(pick[i] * (views - 1))) % views
            out[i] = other * n + i
    return out


def sibling_keys(
    pairs: Sequence[tuple[str, str]], keys: Sequence[int], groups: Sequence[str | None] | None = None
) -> torch.Tensor:
    """(len(keys), 2) integer keys of the kept pairs: their group (``groups[k]``; -1 for none) and their
    caption text. Two pairs are siblings when either matches (identical captions group automatically)."""
    ids: dict[tuple[str, str], int] = {}
    out = []
    for k in keys:
        g = groups[k] if groups is not None else None
        gid = -1 if g in (None, "") else ids.setdefault(("g", str(g)), len(ids))
        out.append((gid, ids.setdefault(("t", pairs[k][1]), len(ids))))
    return torch.tensor(out, dtype=torch.long).view(-1, 2)


def text_identity(texts: Sequence[str]) -> torch.Tensor:
    """One integer per text, equal for equal strings."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(t, len(ids)) for t in texts], dtype=torch.long)
