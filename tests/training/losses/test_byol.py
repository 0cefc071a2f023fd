import pytest
import torch
from torch import nn

from tests.training.losses.naive import dot, rows
from training.losses import BYOLLoss, BYOLPredictionHead


def naive_byol(p_a, p_b, z_a, z_b):
    """BYOL Eq. 2, symmetrised: ||p/|p| - z'/|z'|||^2 = 2 - 2 <p, z'> / (|p| |z'|), both view orders."""

    def term(p, z):
        return 2 - 2 * dot(p, z) / (torch.sqrt(dot(p, p)) * torch.sqrt(dot(z, z)))

    pairs = zip(rows(p_a), rows(p_b), rows(z_a.detach()), rows(z_b.detach()), strict=True)
    total = sum(term(pa, zb) + term(pb, za) for pa, pb, za, zb in pairs)
    return total / p_a.shape[0]


def test_value_and_gradients_match_naive():
    g = torch.Generator().manual_seed(5)
    p_a, p_b, z_a, z_b = (torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    out = BYOLLoss()(p_a, p_b, z_a, z_b)
    assert list(out) == ["byol_loss"]
    ref = naive_byol(p_a, p_b, z_a, z_b)
    torch.testing.assert_close(out["byol_loss"], ref)
    got = torch.autograd.grad(out["byol_loss"], [p_a, p_b])
    for gv, wv in zip(got, torch.autograd.grad(ref, [p_a, p_b]), strict=True):
        torch.testing.assert_close(gv, wv)
    # Stop-gradient on the targets.
    assert torch.autograd.grad(out["byol_loss"], [z_a, z_b], allow_unused=True) == (None, None)


def test_aligned_is_zero_and_opposite_is_eight():
    p = torch.randn(3, 5, dtype=torch.float64)
    loss_fn = BYOLLoss()
    # Cosine ignores length: predictions only need the targets' directions.
    assert loss_fn(p, 2 * p, 3 * p, p)["byol_loss"].item() == pytest.approx(0.0, abs=1e-12)
    assert loss_fn(p, p, -p, -p)["byol_loss"].item() == pytest.approx(8.0)


def test_bad_shapes_are_rejected():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError):
        BYOLLoss()(x, x, x, torch.randn(3, 5))
    with pytest.raises(ValueError):
        BYOLLoss()(x, torch.randn(2, 4), x, x)


def test_prediction_head_layout_and_paper_sizes():
    head = BYOLPredictionHead()
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (256, 4096, 256)
    small = BYOLPredictionHead(input_dim=6, hidden_dim=8, output_dim=4)
    assert small(torch.randn(5, 6)).shape == (5, 4)


@pytest.mark.parametrize("kwargs", [{"input_dim": 0}, {"hidden_dim": -3}, {"output_dim": 2.0}])
def test_prediction_head_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        BYOLPredictionHead(**kwargs)
