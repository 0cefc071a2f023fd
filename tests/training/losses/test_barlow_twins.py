import pytest
import torch

from tests.training.losses.naive import rows
from training.losses import BarlowTwinsLoss


def naive_barlow_twins(z_a, z_b, lam):
    """Barlow Twins Eq. 1-2, C_ij as the cosine of the batch-centred columns i of z_a and j of z_b."""
    n, d = z_a.shape
    a, b = rows(z_a), rows(z_b)
    mean_a = [sum(a[r][i] for r in range(n)) / n for i in range(d)]
    mean_b = [sum(b[r][j] for r in range(n)) / n for j in range(d)]
    loss = 0
    for i in range(d):
        for j in range(d):
            cross = sum((a[r][i] - mean_a[i]) * (b[r][j] - mean_b[j]) for r in range(n))
            norm_a = torch.sqrt(sum((a[r][i] - mean_a[i]) ** 2 for r in range(n)))
            norm_b = torch.sqrt(sum((b[r][j] - mean_b[j]) ** 2 for r in range(n)))
            c = cross / (norm_a * norm_b)
            loss = loss + ((1 - c) ** 2 if i == j else lam * c**2)
    return loss


def test_value_and_gradients_match_naive():
    g = torch.Generator().manual_seed(6)
    z_a = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    out = BarlowTwinsLoss(lambda_offdiag=0.3, eps=0.0)(z_a, z_b)
    assert list(out) == ["barlow_twins_loss"]
    ref = naive_barlow_twins(z_a, z_b, 0.3)
    torch.testing.assert_close(out["barlow_twins_loss"], ref)
    got = torch.autograd.grad(out["barlow_twins_loss"], [z_a, z_b])
    for gv, wv in zip(got, torch.autograd.grad(ref, [z_a, z_b]), strict=True):
        torch.testing.assert_close(gv, wv)
    # BatchNorm's eps barely moves it.
    with_eps = BarlowTwinsLoss(lambda_offdiag=0.3)(z_a, z_b)["barlow_twins_loss"]
    torch.testing.assert_close(with_eps, ref, rtol=1e-4, atol=1e-4)


# Zero-mean, mutually orthogonal columns: a perfectly decorrelated batch.
DECORRELATED = torch.tensor([[1, 1], [-1, 1], [1, -1], [-1, -1]], dtype=torch.float64)


def test_identical_decorrelated_views_give_zero():
    z = 3 * DECORRELATED + 0.5  # scale and shift do not matter after standardising
    assert BarlowTwinsLoss(eps=0.0)(z, z)["barlow_twins_loss"].item() == pytest.approx(0.0, abs=1e-12)
    assert BarlowTwinsLoss()(z, z)["barlow_twins_loss"].item() == pytest.approx(0.0, abs=1e-5)


def test_anticorrelated_views_cost_four_per_dimension():
    loss = BarlowTwinsLoss(eps=0.0)(DECORRELATED, -DECORRELATED)["barlow_twins_loss"]
    assert loss.item() == pytest.approx(4 * 2)


def test_lambda_weights_only_the_off_diagonal():
    # z_b = [c1, c1]: C = [[1, 1], [0, 0]] -> (1-1)^2 + (1-0)^2 + lambda (1^2 + 0^2).
    z_b = DECORRELATED[:, [0, 0]]
    for lam in (0.0, 5e-3, 2.0):
        loss = BarlowTwinsLoss(lambda_offdiag=lam, eps=0.0)(DECORRELATED, z_b)["barlow_twins_loss"]
        assert loss.item() == pytest.approx(1 + lam)


def test_defaults_and_validation():
    loss_fn = BarlowTwinsLoss()
    assert (loss_fn.lambda_offdiag, loss_fn.eps) == (5e-3, 1e-5)
    for kwargs in ({"lambda_offdiag": -1e-3}, {"lambda_offdiag": float("nan")}, {"eps": -1.0}):
        with pytest.raises(ValueError):
            BarlowTwinsLoss(**kwargs)
    with pytest.raises(ValueError, match="at least 2"):
        loss_fn(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(torch.randn(4, 3), torch.randn(4, 2))
