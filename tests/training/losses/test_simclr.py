import math

import pytest
import torch

from tests.training.losses.naive import dot, rows, unit
from training.losses import NTXentLoss


def naive_ntxent(view_a, view_b, tau):
    """SimCLR Eq. 1 and Algorithm 1, with the paper's interleaving z_2k-1 = a_k, z_2k = b_k."""
    z = []
    for a, b in zip(rows(view_a), rows(view_b), strict=True):
        z += [unit(a), unit(b)]

    def sim(u, v):
        return dot(u, v)  # already unit vectors: the cosine

    def ell(i, j):
        numerator = torch.exp(sim(z[i], z[j]) / tau)
        denominator = sum(torch.exp(sim(z[i], z[k]) / tau) for k in range(len(z)) if k != i)
        return -torch.log(numerator / denominator)

    n = len(z) // 2
    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def test_value_and_gradients_match_naive():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    out = NTXentLoss(temperature=0.3)(a, b)
    assert list(out) == ["ntxent_loss"]
    ref = naive_ntxent(a, b, 0.3)
    torch.testing.assert_close(out["ntxent_loss"], ref)
    for got, want in zip(
        torch.autograd.grad(out["ntxent_loss"], [a, b]), torch.autograd.grad(ref, [a, b]), strict=True
    ):
        torch.testing.assert_close(got, want)


def test_single_pair_has_no_negatives_so_zero_loss():
    a, b = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    assert NTXentLoss()(a, b)["ntxent_loss"].item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_two_orthogonal_pairs(tau):
    # Anchor a_1: positive b_1 at cosine 1, negatives a_2, b_2 at cosine 0, so
    # every term is -log(e^(1/tau) / (e^(1/tau) + 2)).
    e = torch.eye(2, dtype=torch.float64)
    loss = NTXentLoss(temperature=tau)(e, e)["ntxent_loss"]
    torch.testing.assert_close(loss, torch.tensor(math.log1p(2 * math.exp(-1 / tau)), dtype=torch.float64))


def test_invariant_to_feature_scale():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(3, 4, generator=g).double(), torch.randn(3, 4, generator=g).double()
    loss_fn = NTXentLoss()
    torch.testing.assert_close(loss_fn(a, b)["ntxent_loss"], loss_fn(7 * a, 0.1 * b)["ntxent_loss"])


def test_default_and_bad_temperatures():
    assert NTXentLoss().temperature == 0.5
    for bad in (0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            NTXentLoss(temperature=bad)
    with pytest.raises(ValueError, match="same shape"):
        NTXentLoss()(torch.randn(3, 4), torch.randn(4, 4))
