"""Same-concept rows left out of the contrastive losses, each checked against a loop over the batch."""

import math

import pytest
import torch

from tests.training.losses.naive import dot, rows, sigmoid, unit
from tests.training.losses.test_hard_negative import naive_anchor
from training.bootstrap import clip_loss
from training.losses import ClipLoss, HardNegativeClipLoss, SigLipLoss
from training.losses.siblings import sibling_mask, sibling_share

# Rows 0 and 2 are siblings (same concept), 1 and 3 are siblings, 4 has none: a symmetric mask.
GROUPS = torch.tensor([7, 8, 7, 8, 9])


def make(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)


def same(i, j):
    return i != j and int(GROUPS[i]) == int(GROUPS[j])


def naive_masked_clip(images, texts, scale, extra=()):
    """CLIP's two cross entropies, skipping every sibling column (and row) one logit at a time."""
    x, y, e = [unit(v) for v in rows(images)], [unit(v) for v in rows(texts)], [unit(v) for v in extra]
    n = len(x)
    i2t = 0
    for i in range(n):
        logits = [scale * dot(x[i], y[j]) for j in range(n) if not same(i, j)] + [scale * dot(x[i], v) for v in e]
        i2t = i2t - (scale * dot(x[i], y[i]) - torch.log(sum(torch.exp(v) for v in logits)))
    t2i = 0
    for j in range(n):
        logits = [scale * dot(x[i], y[j]) for i in range(n) if not same(i, j)]
        t2i = t2i - (scale * dot(x[j], y[j]) - torch.log(sum(torch.exp(v) for v in logits)))
    return (i2t / n + t2i / n) / 2


def naive_masked_siglip(images, texts, scale, bias):
    x, y = [unit(v) for v in rows(images)], [unit(v) for v in rows(texts)]
    n, total = len(x), 0
    for i in range(n):
        for j in range(n):
            if same(i, j):
                continue
            z = 1.0 if i == j else -1.0
            total = total - torch.log(sigmoid(z * (scale * dot(x[i], y[j]) + bias)))
    return total / n


def naive_masked_hard(images, texts, scale, beta, tau_plus, extra=()):
    x, y, e = [unit(v) for v in rows(images)], [unit(v) for v in rows(texts)], [unit(v) for v in extra]
    n = len(x)

    def anchor(positive, negatives):
        return naive_anchor(positive, negatives, beta, tau_plus, scale) if negatives else 0

    i2t = sum(
        anchor(
            scale * dot(x[i], y[i]),
            [scale * dot(x[i], y[j]) for j in range(n) if j != i and not same(i, j)]
            + [scale * dot(x[i], v) for v in e],
        )
        for i in range(n)
    )
    t2i = sum(
        anchor(scale * dot(x[j], y[j]), [scale * dot(x[i], y[j]) for i in range(n) if i != j and not same(i, j)])
        for j in range(n)
    )
    return (i2t / n + t2i / n) / 2


def check_grads(loss, ref, got_leaves, want_leaves):
    torch.testing.assert_close(loss, ref)
    for g, w in zip(torch.autograd.grad(loss, got_leaves), torch.autograd.grad(ref, want_leaves), strict=True):
        torch.testing.assert_close(g, w)


def test_sibling_mask_from_keys():
    groups = torch.tensor([0, 1, 0, -1, -1])
    texts = torch.tensor([5, 6, 7, 8, 8])
    mask = sibling_mask(groups, texts)
    want = torch.zeros(5, 5, dtype=torch.bool)
    want[0, 2] = want[2, 0] = True  # same group
    want[3, 4] = want[4, 3] = True  # same caption; -1 groups are no group
    assert torch.equal(mask, want)
    assert sibling_share(mask) == pytest.approx(4 / 5)
    with pytest.raises(ValueError):
        sibling_mask(groups, texts[:3])


@pytest.mark.parametrize("m", [0, 2])
def test_clip_loss_with_siblings_matches_naive(m):
    images, texts, extra = make(5, 3, seed=0), make(5, 3, seed=1), make(m, 3, seed=2)
    loss_fn = ClipLoss(init_logit_scale=math.log(4.0)).double()
    out = loss_fn(images, texts, extra_text_features=extra if m else None, siblings=sibling_mask(GROUPS))
    t = torch.tensor(math.log(4.0), dtype=torch.float64, requires_grad=True)
    ref = naive_masked_clip(images, texts, torch.exp(t), rows(extra))
    leaves = [images, texts] + ([extra] if m else [])
    check_grads(out["contrastive_loss"], ref, leaves + [loss_fn.logit_scale], leaves + [t])


def test_clip_loss_without_siblings_in_the_mask_is_unchanged():
    images, texts, _ = make(5, 3, seed=0), make(5, 3, seed=1), None
    loss_fn = ClipLoss().double()
    plain = loss_fn(images, texts)["contrastive_loss"]
    none = loss_fn(images, texts, siblings=torch.zeros(5, 5, dtype=torch.bool))["contrastive_loss"]
    diagonal_only = loss_fn(images, texts, siblings=torch.eye(5, dtype=torch.bool))["contrastive_loss"]
    torch.testing.assert_close(plain, none)
    torch.testing.assert_close(plain, diagonal_only)  # a row is never its own sibling


def test_masking_siblings_lowers_the_loss_of_a_batch_where_siblings_look_alike():
    """Two drawings of one concept with the same caption: unmasked, each is the other's hard negative."""
    images = torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]], dtype=torch.float64)
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss_fn = ClipLoss(init_logit_scale=math.log(20.0)).double()
    plain = float(loss_fn(images, texts)["contrastive_loss"].detach())
    masked = float(loss_fn(images, texts, siblings=sibling_mask(torch.tensor([0, 0, 1])))["contrastive_loss"].detach())
    assert plain > 0.6 * math.log(2) and masked < 1e-3  # unmasked: two rows of three torn between siblings


def test_siglip_loss_with_siblings_matches_naive():
    images, texts = make(5, 3, seed=3), make(5, 3, seed=4)
    loss_fn = SigLipLoss(init_logit_scale=math.log(3.0), init_logit_bias=-1.5).double()
    out = loss_fn(images, texts, siblings=sibling_mask(GROUPS))
    t = torch.tensor(math.log(3.0), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    ref = naive_masked_siglip(images, texts, torch.exp(t), b)
    check_grads(
        out["contrastive_loss"], ref, [images, texts, loss_fn.logit_scale, loss_fn.logit_bias], [images, texts, t, b]
    )


@pytest.mark.parametrize(("beta", "tau_plus", "m"), [(1.0, 0.1, 0), (0.5, 0.3, 2), (0.0, 0.0, 0), (0.2, 0.0, 1)])
def test_hard_negative_loss_with_siblings_matches_naive(beta, tau_plus, m):
    images, texts, extra = make(5, 3, seed=5), make(5, 3, seed=6), make(m, 3, seed=7)
    loss_fn = HardNegativeClipLoss(beta=beta, tau_plus=tau_plus, init_logit_scale=math.log(3.0)).double()
    out = loss_fn(images, texts, extra_text_features=extra if m else None, siblings=sibling_mask(GROUPS))
    t = torch.tensor(math.log(3.0), dtype=torch.float64, requires_grad=True)
    ref = naive_masked_hard(images, texts, torch.exp(t), beta, tau_plus, rows(extra))
    leaves = [images, texts] + ([extra] if m else [])
    check_grads(out["contrastive_loss"], ref, leaves + [loss_fn.logit_scale], leaves + [t])


def test_hard_negative_loss_anchor_with_only_siblings_contributes_nothing():
    images, texts = make(2, 3, seed=8), make(2, 3, seed=9)
    loss_fn = HardNegativeClipLoss(beta=0.5, tau_plus=0.1).double()
    out = loss_fn(images, texts, siblings=sibling_mask(torch.tensor([1, 1])))["contrastive_loss"]
    assert float(out.detach()) == 0.0
    (g,) = torch.autograd.grad(out, [images], allow_unused=True)
    assert g is None or torch.all(g == 0)


def test_hard_negative_loss_with_beta_zero_and_siblings_is_masked_clip():
    images, texts = make(5, 3, seed=10), make(5, 3, seed=11)
    mask = sibling_mask(GROUPS)
    hard = HardNegativeClipLoss(beta=0.0, tau_plus=0.0).double()(images, texts, siblings=mask)
    plain = ClipLoss().double()(images, texts, siblings=mask)
    torch.testing.assert_close(hard["contrastive_loss"], plain["contrastive_loss"])


def test_bootstrap_clip_loss_with_siblings_matches_naive():
    images, texts = make(5, 3, seed=12), make(5, 3, seed=13)
    t = torch.tensor(math.log(6.0), dtype=torch.float64, requires_grad=True)
    loss = clip_loss(images, texts, t, siblings=sibling_mask(GROUPS))
    t2 = torch.tensor(math.log(6.0), dtype=torch.float64, requires_grad=True)
    check_grads(loss, naive_masked_clip(images, texts, torch.exp(t2)), [images, texts, t], [images, texts, t2])


@pytest.mark.parametrize("bad", [torch.zeros(4, 4, dtype=torch.bool), torch.zeros(5, 5)])
def test_a_mask_of_the_wrong_shape_or_type_is_refused(bad):
    images, texts = make(5, 3), make(5, 3, seed=1)
    for loss_fn in (ClipLoss(), SigLipLoss(), HardNegativeClipLoss()):
        with pytest.raises(ValueError, match="siblings"):
            loss_fn.double()(images, texts, siblings=bad)
