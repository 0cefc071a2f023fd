import math

import pytest
import torch

from tests.training.losses.naive import dot, rows, unit
from training.losses import ClipLoss, HardNegativeClipLoss


def naive_anchor(positive, negatives, beta, tau_plus, scale):
    """Robinson et al. 2021's estimator for one anchor, term by term (their Appendix D)."""
    k = len(negatives)
    exp_neg = [torch.exp(l) for l in negatives]
    importance = [torch.exp(beta * l) for l in negatives]
    reweighted = sum(w * e for w, e in zip(importance, exp_neg, strict=True)) / (sum(importance) / k)
    ng = (-tau_plus * k * torch.exp(positive) + reweighted) / (1 - tau_plus)
    ng = max(ng, k * torch.exp(-scale))
    return -torch.log(torch.exp(positive) / (torch.exp(positive) + ng))


def naive_hard_clip(images, texts, scale, beta, tau_plus, extra=(), per_image=None, per_text=None):
    """Both directions, one logit at a time; per_image[i] / per_text[j] are lists of vectors."""
    x = [unit(v) for v in rows(images)]
    y = [unit(v) for v in rows(texts)]
    e = [unit(v) for v in extra]
    n = len(x)
    image_to_text = 0
    for i in range(n):
        negatives = [scale * dot(x[i], y[j]) for j in range(n) if j != i] + [scale * dot(x[i], ek) for ek in e]
        if per_image is not None:
            negatives += [scale * dot(x[i], unit(v)) for v in per_image[i]]
        image_to_text = image_to_text + naive_anchor(scale * dot(x[i], y[i]), negatives, beta, tau_plus, scale)
    text_to_image = 0
    for j in range(n):
        negatives = [scale * dot(x[i], y[j]) for i in range(n) if i != j]
        if per_text is not None:
            negatives += [scale * dot(y[j], unit(v)) for v in per_text[j]]
        text_to_image = text_to_image + naive_anchor(scale * dot(x[j], y[j]), negatives, beta, tau_plus, scale)
    return (image_to_text / n + text_to_image / n) / 2


def make(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize(("beta", "tau_plus", "m"), [(1.0, 0.1, 0), (0.5, 0.3, 2), (2.0, 0.0, 0), (0.0, 0.1, 1)])
def test_value_and_gradients_match_naive(beta, tau_plus, m):
    images, texts, extra = make(4, 3, seed=0), make(4, 3, seed=1), make(m, 3, seed=2)
    loss_fn = HardNegativeClipLoss(beta=beta, tau_plus=tau_plus, init_logit_scale=math.log(3.0)).double()
    out = loss_fn(images, texts, extra_text_features=extra if m else None)
    assert list(out) == ["contrastive_loss"]

    t = torch.tensor(math.log(3.0), dtype=torch.float64, requires_grad=True)
    ref = naive_hard_clip(images, texts, torch.exp(t), beta, tau_plus, rows(extra))
    torch.testing.assert_close(out["contrastive_loss"], ref)

    leaves = [images, texts] + ([extra] if m else [])
    got = torch.autograd.grad(out["contrastive_loss"], leaves + [loss_fn.logit_scale])
    want = torch.autograd.grad(ref, leaves + [t])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_per_query_negatives_match_naive():
    n, s, d = 3, 2, 4
    images, texts = make(n, d, seed=3), make(n, d, seed=4)
    per_image, per_text = make(n, s, d, seed=5), make(n, s + 1, d, seed=6)
    loss_fn = HardNegativeClipLoss(beta=1.0, tau_plus=0.1).double()
    scale = torch.tensor(4.0, dtype=torch.float64)
    loss = loss_fn(
        images, texts, logit_scale=scale, text_negatives_per_image=per_image, image_negatives_per_text=per_text
    )["contrastive_loss"]
    ref = naive_hard_clip(
        images, texts, scale, 1.0, 0.1, per_image=[rows(r) for r in per_image], per_text=[rows(r) for r in per_text]
    )
    torch.testing.assert_close(loss, ref)
    leaves = [images, texts, per_image, per_text]
    for g, w in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(ref, leaves), strict=True):
        torch.testing.assert_close(g, w)


def test_floor_is_active_and_matches_naive():
    # Nearly aligned pairs and a large tau+: the debiased sum goes negative for every anchor.
    base = torch.eye(3, 5, dtype=torch.float64)
    images = (base + 0.05 * make(3, 5, seed=7)).detach().requires_grad_()
    texts = (base + 0.05 * make(3, 5, seed=8)).detach().requires_grad_()
    scale = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)
    loss = HardNegativeClipLoss(beta=1.0, tau_plus=0.9).double()(images, texts, logit_scale=scale)["contrastive_loss"]
    ref = naive_hard_clip(images, texts, scale, 1.0, 0.9)
    torch.testing.assert_close(loss, ref)
    for g, w in zip(
        torch.autograd.grad(loss, [images, texts, scale]), torch.autograd.grad(ref, [images, texts, scale]), strict=True
    ):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("m", [0, 3])
def test_beta_and_tau_plus_zero_is_exactly_clip(m):
    images, texts, extra = make(5, 4, seed=9), make(5, 4, seed=10), make(m, 4, seed=11)
    kwargs = {"extra_text_features": extra} if m else {}
    hard = HardNegativeClipLoss(beta=0.0, tau_plus=0.0).double()(images, texts, **kwargs)["contrastive_loss"]
    plain = ClipLoss().double()(images, texts, **kwargs)["contrastive_loss"]
    torch.testing.assert_close(hard, plain, rtol=1e-12, atol=1e-12)
    leaves = [images, texts] + ([extra] if m else [])
    for g, w in zip(torch.autograd.grad(hard, leaves), torch.autograd.grad(plain, leaves), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_per_query_negatives_with_beta_zero_are_extra_softmax_columns():
    n, s, d = 4, 3, 5
    images, texts, per_image = make(n, d, seed=12), make(n, d, seed=13), make(n, s, d, seed=14)
    scale = 5.0
    loss = HardNegativeClipLoss(beta=0.0, tau_plus=0.0).double()(
        images, texts, logit_scale=scale, text_negatives_per_image=per_image
    )["contrastive_loss"]
    x, y, e = (torch.nn.functional.normalize(t, dim=-1) for t in (images, texts, per_image))
    i2t = torch.cat([scale * x @ y.T, scale * torch.einsum("nd,nsd->ns", x, e)], dim=1)
    labels = torch.arange(n)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(loss, (ce(i2t, labels) + ce(scale * y @ x.T, labels)) / 2)


@pytest.mark.parametrize(("beta", "tau_plus"), [(1.0, 0.1), (3.0, 0.5), (0.0, 0.0)])
def test_identical_features_give_log_n_whatever_the_weights(beta, tau_plus):
    # All logits equal: the weights are uniform and the debiasing cancels, Ng = K e^l.
    n, m = 5, 2
    same = torch.ones(n, 4, dtype=torch.float64)
    loss_fn = HardNegativeClipLoss(beta=beta, tau_plus=tau_plus).double()
    torch.testing.assert_close(loss_fn(same, same)["contrastive_loss"], torch.tensor(math.log(n)).double())
    widened = loss_fn(same, same, extra_text_features=torch.ones(m, 4, dtype=torch.float64))
    torch.testing.assert_close(widened["contrastive_loss"], torch.tensor((math.log(n + m) + math.log(n)) / 2).double())


def test_orthogonal_pairs_at_the_clip_hit_the_floor():
    # p = 100, negatives 0: Ng = (K - 0.1 K e^100) / 0.9 < 0, floored at K e^-100.
    n = 4
    features = torch.eye(n, dtype=torch.float64)
    loss = HardNegativeClipLoss().double()(features, features, logit_scale=100.0)["contrastive_loss"]
    torch.testing.assert_close(loss, torch.tensor(math.log1p((n - 1) * math.exp(-200)), dtype=torch.float64))


def test_large_beta_concentrates_on_the_hardest_negative():
    images, texts = make(4, 6, seed=15), make(4, 6, seed=16)
    scale = 4.0
    loss = HardNegativeClipLoss(beta=200.0, tau_plus=0.0).double()(images, texts, logit_scale=scale)
    x = torch.nn.functional.normalize(images, dim=-1)
    y = torch.nn.functional.normalize(texts, dim=-1)
    logits = scale * x @ y.T
    off = ~torch.eye(4, dtype=torch.bool)

    def limit(lg):  # every negative replaced by the hardest one
        hardest = lg.masked_fill(~off, -math.inf).amax(dim=1)
        return (torch.log(lg.diagonal().exp() + 3 * hardest.exp()) - lg.diagonal()).mean()

    torch.testing.assert_close(loss["contrastive_loss"], (limit(logits) + limit(logits.T)) / 2, rtol=1e-3, atol=1e-3)


def test_float32_is_stable_at_the_clip():
    # exp(100 * cos) overflows float32; the log-space computation must not.
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    texts = images + 0.1 * texts
    loss = HardNegativeClipLoss(beta=1.0)(images.requires_grad_(), texts, logit_scale=100.0)["contrastive_loss"]
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(images.grad).all()


def test_batch_of_one_without_negatives_is_zero():
    x = torch.randn(1, 4)
    assert HardNegativeClipLoss()(x, x)["contrastive_loss"].item() == 0.0


def test_defaults_are_the_papers():
    loss_fn = HardNegativeClipLoss()
    assert (loss_fn.beta, loss_fn.tau_plus) == (1.0, 0.1)
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert loss_fn.max_logit_scale == 100.0
    # Same state-dict keys as ClipLoss: a config can switch between them on resume.
    assert HardNegativeClipLoss().state_dict().keys() == ClipLoss().state_dict().keys()


@pytest.mark.parametrize(
    "kwargs",
    [{"beta": -0.1}, {"beta": float("nan")}, {"tau_plus": -0.1}, {"tau_plus": 1.0}, {"max_logit_scale": 0.0}],
)
def test_bad_hyper_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        HardNegativeClipLoss(**kwargs)


def test_bad_shapes_are_rejected():
    loss_fn = HardNegativeClipLoss()
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(x, torch.randn(2, 4))
    with pytest.raises(ValueError, match="extra_text_features"):
        loss_fn(x, x, extra_text_features=torch.randn(2, 5))
    with pytest.raises(ValueError, match="text_negatives_per_image"):
        loss_fn(x, x, text_negatives_per_image=torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match="image_negatives_per_text"):
        loss_fn(x, x, image_negatives_per_text=torch.randn(3, 4))


def test_extra_image_features_are_negatives_for_every_text_only():
    import math as _math

    torch.manual_seed(3)
    img, txt, extra = (
        torch.randn(4, 5, dtype=torch.float64),
        torch.randn(4, 5, dtype=torch.float64),
        torch.randn(3, 5, dtype=torch.float64),
    )
    loss = HardNegativeClipLoss(beta=0.0, tau_plus=0.0)
    got = loss(img, txt, logit_scale=torch.tensor(5.0, dtype=torch.float64), extra_image_features=extra)[
        "contrastive_loss"
    ]
    a, b, e = (torch.nn.functional.normalize(x, dim=-1) for x in (img, txt, extra))
    total = 0.0
    for i in range(4):
        row = [5.0 * float(a[i] @ b[j]) for j in range(4)]
        col = [5.0 * float(b[i] @ a[j]) for j in range(4)] + [5.0 * float(b[i] @ e[j]) for j in range(3)]
        total += -row[i] + _math.log(sum(_math.exp(v) for v in row))
        total += -col[i] + _math.log(sum(_math.exp(v) for v in col))
    assert float(got) == pytest.approx(total / 8, rel=1e-9)
