import math

import pytest
import torch

from tests.training.losses.naive import dot, rows, sigmoid, unit
from training.losses import SigLipLoss


def naive_siglip(images, texts, scale, bias):
    """SigLIP Eq. 1: -1/|B| sum_i sum_j log sigma(z_ij (t x_i.y_j + b))."""
    x = [unit(v) for v in rows(images)]
    y = [unit(v) for v in rows(texts)]
    n = len(x)
    total = 0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total = total - torch.log(sigmoid(z * (scale * dot(x[i], y[j]) + bias)))
    return total / n


def test_value_and_gradients_match_naive():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    texts = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    loss_fn = SigLipLoss(init_logit_scale=math.log(3.0), init_logit_bias=-1.5).double()
    out = loss_fn(images, texts)
    assert list(out) == ["contrastive_loss"]

    t = torch.tensor(math.log(3.0), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    ref = naive_siglip(images, texts, torch.exp(t), b)
    torch.testing.assert_close(out["contrastive_loss"], ref)

    got = torch.autograd.grad(out["contrastive_loss"], [images, texts, loss_fn.logit_scale, loss_fn.logit_bias])
    want = torch.autograd.grad(ref, [images, texts, t, b])
    for gv, wv in zip(got, want, strict=True):
        torch.testing.assert_close(gv, wv)


def test_hand_computed_logits_at_paper_init():
    # Two orthonormal pairs, s = 10, b = -10: the positives sit at logit 0 and
    # the negatives at -10, so L = (2 ln 2 + 2 ln(1 + e^-10)) / 2.
    features = torch.eye(2, dtype=torch.float64)
    loss = SigLipLoss().double()(features, features)["contrastive_loss"]
    torch.testing.assert_close(loss, torch.tensor(math.log(2) + math.log1p(math.exp(-10)), dtype=torch.float64))


def test_external_scale_and_bias_override_the_modules_own():
    g = torch.Generator().manual_seed(2)
    images, texts = torch.randn(3, 5, generator=g).double(), torch.randn(3, 5, generator=g).double()
    scale = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    loss_fn = SigLipLoss().double()
    loss = loss_fn(images, texts, logit_scale=scale, logit_bias=bias)["contrastive_loss"]
    torch.testing.assert_close(loss, naive_siglip(images, texts, 20.0, -4.0))
    loss.backward()
    assert scale.grad is not None and bias.grad is not None
    assert loss_fn.logit_scale.grad is None and loss_fn.logit_bias.grad is None


def test_defaults_and_pretrained_values():
    loss_fn = SigLipLoss()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(10))
    assert loss_fn.logit_bias.item() == -10.0
    assert {name for name, _ in loss_fn.named_parameters()} == {"logit_scale", "logit_bias"}
    pretrained = SigLipLoss(init_logit_scale=torch.tensor(4.7), init_logit_bias=torch.tensor(-12.9), learnable=False)
    assert list(pretrained.parameters()) == []
    assert set(pretrained.state_dict()) == {"logit_scale", "logit_bias"}
    assert pretrained.logit_bias.item() == pytest.approx(-12.9)


@pytest.mark.parametrize("n", [2, 5, 64])
def test_batch_size_bias_matches_the_base_rate_and_is_stationary(n):
    loss_fn = SigLipLoss.for_batch_size(n).double()
    assert loss_fn.logit_bias.item() == pytest.approx(-math.log(n - 1))
    assert torch.sigmoid(loss_fn.logit_bias).item() == pytest.approx(1 / n)
    # With every pair orthogonal all logits equal b; that b minimises the loss.
    basis = torch.eye(2 * n, dtype=torch.float64)
    loss = loss_fn(basis[:n], basis[n:])["contrastive_loss"]
    (grad_b,) = torch.autograd.grad(loss, [loss_fn.logit_bias])
    assert abs(grad_b.item()) < 1e-6  # b was stored in float32
    # The paper's -10 is far from stationary at these batch sizes.
    paper = SigLipLoss().double()
    (grad_paper,) = torch.autograd.grad(paper(basis[:n], basis[n:])["contrastive_loss"], [paper.logit_bias])
    assert grad_paper.item() < -0.9


@pytest.mark.parametrize(
    "make",
    [
        lambda: SigLipLoss(init_logit_scale=float("nan")),
        lambda: SigLipLoss(init_logit_bias=float("-inf")),
        lambda: SigLipLoss.for_batch_size(1),
        lambda: SigLipLoss.for_batch_size(0),
        lambda: SigLipLoss.for_batch_size(8, init_logit_bias=-3.0),
    ],
)
def test_bad_hyper_parameters_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        SigLipLoss()(torch.randn(3, 4), torch.randn(3, 5))
