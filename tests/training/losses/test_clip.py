import math

import pytest
import torch

from tests.training.losses.naive import dot, rows, unit
from training.losses import ClipLoss


def naive_clip(images, texts, scale, extra=()):
    """CLIP's symmetric cross entropy, one logit at a time (paper Fig. 3)."""
    x = [unit(v) for v in rows(images)]
    y = [unit(v) for v in rows(texts)]
    e = [unit(v) for v in extra]
    n = len(x)
    image_to_text = 0
    for i in range(n):
        logits = [scale * dot(x[i], y[j]) for j in range(n)] + [scale * dot(x[i], ek) for ek in e]
        image_to_text = image_to_text - torch.log(torch.exp(logits[i]) / sum(torch.exp(v) for v in logits))
    text_to_image = 0
    for j in range(n):
        logits = [scale * dot(x[i], y[j]) for i in range(n)]
        text_to_image = text_to_image - torch.log(torch.exp(logits[j]) / sum(torch.exp(v) for v in logits))
    return (image_to_text / n + text_to_image / n) / 2


def inputs(n=4, d=3, m=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return make(n, d), make(n, d), make(m, d)


@pytest.mark.parametrize("m", [0, 2])
def test_value_and_gradients_match_naive(m):
    images, texts, extra = inputs(m=m)
    loss_fn = ClipLoss(init_logit_scale=math.log(5.0)).double()
    out = loss_fn(images, texts, extra_text_features=extra if m else None)
    assert list(out) == ["contrastive_loss"]

    t = torch.tensor(math.log(5.0), dtype=torch.float64, requires_grad=True)
    ref = naive_clip(images, texts, torch.exp(t), rows(extra))
    torch.testing.assert_close(out["contrastive_loss"], ref)

    leaves = [images, texts] + ([extra] if m else [])
    got = torch.autograd.grad(out["contrastive_loss"], leaves + [loss_fn.logit_scale])
    want = torch.autograd.grad(ref, leaves + [t])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_prenormalised_features_with_normalize_false():
    images, texts, _ = inputs()
    images_unit = torch.nn.functional.normalize(images.detach(), dim=-1)
    texts_unit = torch.nn.functional.normalize(texts.detach(), dim=-1)
    plain = ClipLoss(normalize=False).double()(images_unit, texts_unit)["contrastive_loss"]
    normalising = ClipLoss().double()(images.detach(), texts.detach())["contrastive_loss"]
    torch.testing.assert_close(plain, normalising)


def test_external_logit_scale_is_used_and_receives_gradient():
    images, texts, _ = inputs()
    external = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    loss_fn = ClipLoss().double()
    loss = loss_fn(images, texts, logit_scale=external)["contrastive_loss"]
    torch.testing.assert_close(loss, naive_clip(images, texts, torch.tensor(7.0, dtype=torch.float64)))
    loss.backward()
    assert external.grad is not None and loss_fn.logit_scale.grad is None


def test_aligned_orthogonal_pairs_at_the_clip_give_almost_zero():
    n = 4
    features = torch.eye(n, dtype=torch.float64)
    loss = ClipLoss().double()(features, features, logit_scale=100.0)["contrastive_loss"]
    # Each row: -log(e^100 / (e^100 + (n-1) e^0)).
    torch.testing.assert_close(loss, torch.tensor(math.log1p((n - 1) * math.exp(-100)), dtype=torch.float64))
    assert loss < 1e-40


def test_identical_features_give_log_n_and_extra_negatives_widen_image_side():
    n, m = 5, 3
    same = torch.ones(n, 4, dtype=torch.float64)
    loss_fn = ClipLoss().double()
    torch.testing.assert_close(loss_fn(same, same)["contrastive_loss"], torch.tensor(math.log(n)).double())
    with_extra = loss_fn(same, same, extra_text_features=torch.ones(m, 4, dtype=torch.float64))
    want = (math.log(n + m) + math.log(n)) / 2
    torch.testing.assert_close(with_extra["contrastive_loss"], torch.tensor(want).double())


def test_defaults_are_the_papers():
    loss_fn = ClipLoss()
    assert isinstance(loss_fn.logit_scale, torch.nn.Parameter)
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert loss_fn.scale().item() == pytest.approx(1 / 0.07)
    frozen = ClipLoss(learnable=False)
    assert not isinstance(frozen.logit_scale, torch.nn.Parameter)
    assert "logit_scale" in frozen.state_dict() and list(frozen.parameters()) == []


def test_logit_scale_is_clamped_at_100():
    images, texts, _ = inputs()
    loss_fn = ClipLoss().double()
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))
    assert loss_fn.scale().item() == 100.0
    clamped = loss_fn(images, texts)["contrastive_loss"]
    torch.testing.assert_close(clamped, naive_clip(images, texts, torch.tensor(100.0).double()))
    clamped.backward()
    assert loss_fn.logit_scale.grad.item() == 0.0  # past the clip the scale stops learning
    # An external scale is clipped too; None lifts the clip.
    assert loss_fn.scale(500.0).item() == 100.0
    assert ClipLoss(init_logit_scale=math.log(1000), max_logit_scale=None).scale().item() == pytest.approx(1000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_logit_scale": 0.0},
        {"max_logit_scale": -1.0},
        {"init_logit_scale": math.log(200)},
        {"init_logit_scale": float("nan")},
        {"init_logit_scale": float("inf"), "max_logit_scale": None},
    ],
)
def test_bad_hyper_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ClipLoss(**kwargs)


def test_bad_shapes_are_rejected():
    loss_fn = ClipLoss()
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        loss_fn(torch.randn(3), torch.randn(3))
    with pytest.raises(ValueError, match="extra_text_features"):
        loss_fn(torch.randn(3, 4), torch.randn(3, 4), extra_text_features=torch.randn(2, 5))
