import math

import pytest
import torch
from torch import nn

from tests.training.losses.naive import dot, rows, unit
from training.losses import (
    CrossModalMoCoLoss,
    MoCoLoss,
    MomentumEncoder,
    cosine_momentum,
    update_momentum,
)


def naive_moco(queries, keys, queue, tau):
    """MoCo Eq. 1: -log exp(q.k+/tau) / (exp(q.k+/tau) + sum_j exp(q.n_j/tau)), averaged."""
    total = 0
    for q, k in zip(rows(queries), rows(keys.detach()), strict=True):
        q, k = unit(q), unit(k)
        positive = torch.exp(dot(q, k) / tau)
        negatives = sum(torch.exp(dot(q, n) / tau) for n in rows(queue))
        total = total - torch.log(positive / (positive + negatives))
    return total / queries.shape[0]


def randn(*shape, seed, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=grad)


def unit_rows(*shape, seed):
    return nn.functional.normalize(randn(*shape, seed=seed), dim=-1)


def test_uni_modal_matches_naive_and_enqueues_the_keys():
    loss_fn = MoCoLoss(temperature=0.2, queue_size=8, dim=3).double()
    prior = unit_rows(5, 3, seed=0)
    loss_fn.queue.enqueue(prior)
    q, k = randn(4, 3, seed=1, grad=True), randn(4, 3, seed=2, grad=True)

    out = loss_fn(q, k)
    assert list(out) == ["moco_loss"]
    ref = naive_moco(q, k, prior, 0.2)
    torch.testing.assert_close(out["moco_loss"], ref)
    torch.testing.assert_close(torch.autograd.grad(out["moco_loss"], q)[0], torch.autograd.grad(ref, q)[0])
    assert torch.autograd.grad(out["moco_loss"], k, allow_unused=True)[0] is None  # keys are stop-grad

    # 5 old + 4 new in a queue of 8: the oldest key fell out, the batch's keys are newest.
    stored = loss_fn.queue.features()
    torch.testing.assert_close(stored[:4], prior[1:])
    torch.testing.assert_close(stored[4:], nn.functional.normalize(k.detach(), dim=-1))


def test_backward_still_works_after_the_keys_were_enqueued():
    loss_fn = MoCoLoss(queue_size=4, dim=3).double()
    loss_fn.queue.enqueue(unit_rows(4, 3, seed=3))  # full: the next enqueue overwrites every slot
    q = randn(4, 3, seed=4, grad=True)
    loss_fn(q, randn(4, 3, seed=5))["moco_loss"].backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_empty_queue_gives_zero_and_enqueue_false_leaves_the_queue():
    loss_fn = MoCoLoss(queue_size=4, dim=3)
    assert loss_fn(torch.randn(2, 3), torch.randn(2, 3), enqueue=False)["moco_loss"].item() == 0.0
    assert len(loss_fn.queue) == 0
    loss_fn(torch.randn(2, 3), torch.randn(2, 3))
    assert len(loss_fn.queue) == 2


def test_defaults_are_moco_v2():
    loss_fn = MoCoLoss()
    assert loss_fn.temperature == 0.2
    assert (loss_fn.queue.size, loss_fn.queue.dim) == (65_536, 128)
    assert "queue.queue" in loss_fn.state_dict()


def test_cross_modal_each_queue_gets_its_own_modality():
    loss_fn = CrossModalMoCoLoss(temperature=0.1, queue_size=6, dim=3).double()
    image_prior, text_prior = unit_rows(3, 3, seed=10), unit_rows(4, 3, seed=11)
    loss_fn.image_queue.enqueue(image_prior)
    loss_fn.text_queue.enqueue(text_prior)
    q_img, q_txt = randn(2, 3, seed=12, grad=True), randn(2, 3, seed=13, grad=True)
    k_img, k_txt = randn(2, 3, seed=14), randn(2, 3, seed=15)

    out = loss_fn(q_img, q_txt, k_img, k_txt)
    assert list(out) == ["moco_loss"]
    # Image queries against text keys and the text queue; text queries against image keys and the image queue.
    ref = (naive_moco(q_img, k_txt, text_prior, 0.1) + naive_moco(q_txt, k_img, image_prior, 0.1)) / 2
    torch.testing.assert_close(out["moco_loss"], ref)
    got = torch.autograd.grad(out["moco_loss"], [q_img, q_txt])
    for g, w in zip(got, torch.autograd.grad(ref, [q_img, q_txt]), strict=True):
        torch.testing.assert_close(g, w)

    images, texts = loss_fn.image_queue.features(), loss_fn.text_queue.features()
    torch.testing.assert_close(images, torch.cat([image_prior, nn.functional.normalize(k_img, dim=-1)]))
    torch.testing.assert_close(texts, torch.cat([text_prior, nn.functional.normalize(k_txt, dim=-1)]))


def test_cross_modal_one_direction():
    loss_fn = CrossModalMoCoLoss(queue_size=6, dim=3, symmetric=False).double()
    text_prior = unit_rows(4, 3, seed=20)
    loss_fn.text_queue.enqueue(text_prior)
    q_img, k_txt = randn(2, 3, seed=21), randn(2, 3, seed=22)
    loss = loss_fn(q_img, None, None, k_txt)["moco_loss"]
    torch.testing.assert_close(loss, naive_moco(q_img, k_txt, text_prior, 0.2))
    assert len(loss_fn.text_queue) == 6 and len(loss_fn.image_queue) == 0
    with pytest.raises(ValueError, match="symmetric=True"):
        CrossModalMoCoLoss(queue_size=6, dim=3)(q_img, None, None, k_txt)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MoCoLoss(temperature=0),
        lambda: MoCoLoss(queue_size=65_537),
        lambda: MoCoLoss(dim=0),
        lambda: CrossModalMoCoLoss(temperature=-1),
        lambda: CrossModalMoCoLoss(queue_size=0),
    ],
)
def test_bad_hyper_parameters_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_update_momentum_is_the_ema_formula():
    online, ema = nn.Linear(2, 2).double(), nn.Linear(2, 2).double()
    with torch.no_grad():
        online.weight.fill_(1.0), online.bias.fill_(-2.0)
        ema.weight.fill_(3.0), ema.bias.fill_(0.5)
    update_momentum(online, ema, m=0.9)
    torch.testing.assert_close(ema.weight, torch.full((2, 2), 0.9 * 3.0 + 0.1 * 1.0, dtype=torch.float64))
    torch.testing.assert_close(ema.bias, torch.full((2,), 0.9 * 0.5 + 0.1 * -2.0, dtype=torch.float64))
    update_momentum(online, ema, m=0.0)  # m = 0 copies
    torch.testing.assert_close(ema.weight, online.weight)
    assert online.weight.grad is None


def test_update_momentum_rejects_bad_momentum_and_mismatched_models():
    with pytest.raises(ValueError, match="momentum"):
        update_momentum(nn.Linear(2, 2), nn.Linear(2, 2), m=1.5)
    with pytest.raises(ValueError, match="models differ"):
        update_momentum(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="shapes differ"):
        update_momentum(nn.Linear(2, 2), nn.Linear(2, 3))


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100) == pytest.approx(0.996)
    assert cosine_momentum(50, 100) == pytest.approx(0.998)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(250, 100) == pytest.approx(1.0)
    k, total = 30, 100
    assert cosine_momentum(k, total) == pytest.approx(1 - 0.004 * (math.cos(math.pi * k / total) + 1) / 2)
    for bad in [
        dict(step=-1, total_steps=10),
        dict(step=0, total_steps=0),
        dict(step=0, total_steps=10, base=2),
    ]:
        with pytest.raises(ValueError):
            cosine_momentum(**bad)


def test_momentum_encoder_is_a_frozen_copy_that_follows_by_ema():
    online = nn.Linear(2, 2)
    target = MomentumEncoder(online)
    assert target.momentum == 0.999
    assert all(not p.requires_grad for p in target.parameters())
    torch.testing.assert_close(target.module.weight, online.weight)
    assert not target(torch.randn(3, 2)).requires_grad
    before = target.module.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    target.update(online, momentum=0.5)
    torch.testing.assert_close(target.module.weight, 0.5 * before + 0.5 * online.weight.detach())
    with pytest.raises(ValueError):
        MomentumEncoder(online, momentum=-0.1)
