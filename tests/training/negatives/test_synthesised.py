import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import ClipLoss, HardNegativeClipLoss
from training.negatives.synthesised import (
    DEFAULT_VOCABULARY,
    SYNTHETIC_VOCABULARY,
    batch_mixed_negatives,
    mix_hard_negatives,
    perturb_caption,
    perturbation_negatives,
)
from training.synthetic.shapes import COLOURS, POSITIONS, SHAPES, SIZES, Scene, sample_scene


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def hardest_eligible(q, pool, k, threshold=None, positive=None):
    """Brute force, one query: indices of the k most similar eligible negatives."""
    scored = []
    for j in range(len(pool)):
        sim = float(q @ pool[j])
        if threshold is not None and sim > threshold:
            continue
        if positive is not None and float(positive @ pool[j]) >= 1 - 1e-5:
            continue
        scored.append((sim, j))
    return [j for _, j in sorted(scored, reverse=True)[:k]]


def residual(point, basis):
    """Distance from ``point`` to the span of the rows of ``basis``."""
    coef = torch.linalg.lstsq(basis.T, point[:, None]).solution
    return float((basis.T @ coef).squeeze(1).sub(point).norm()), coef.squeeze(1)


# ------------------------------------------------------------------- MoCHi


def test_shapes_normalisation_and_no_gradient():
    query = unit(5, 16, seed=0).requires_grad_()
    pool = unit(20, 16, seed=1).requires_grad_()
    out = mix_hard_negatives(query, pool, n_hardest=4, n_synth=6, n_query_mix=3)
    assert out.shape == (5, 9, 16) and not out.requires_grad
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5, 9, dtype=torch.float64))
    assert mix_hard_negatives(query, pool, n_synth=2).shape == (5, 2, 16)  # defaults cap n_hardest at M


def test_synthetic_points_lie_in_the_span_of_the_chosen_hard_negatives():
    # D = 16 > k + 1, so a span test is a real constraint.
    query, pool = unit(4, 16, seed=2), unit(30, 16, seed=3)
    k = 3
    out = mix_hard_negatives(
        query, pool, n_hardest=k, n_synth=8, n_query_mix=8, generator=torch.Generator().manual_seed(0)
    )
    for i in range(4):
        hard = pool[hardest_eligible(query[i], pool, k, threshold=0.9)]
        for point in out[i, :8]:
            dist, coef = residual(point, hard)
            assert dist < 1e-8
            assert (coef > -1e-8).all()  # a convex mix (rescaled), never an extrapolation
        for point in out[i, 8:]:
            dist, coef = residual(point, torch.cat([query[i : i + 1], hard]))
            assert dist < 1e-8
            # b < 0.5: the query's weight is below the hard negative's.
            assert 0 <= coef[0] < coef[1:].max()


def test_guard_drops_planted_false_negatives_and_the_positive():
    d = 16
    query, positive = unit(1, d, seed=4), unit(1, d, seed=5)
    others = unit(10, d, seed=6)
    near_duplicate = F.normalize(query + 0.05 * unit(1, d, seed=7), dim=-1)  # cosine > 0.9
    assert float(near_duplicate @ query.T) > 0.9
    pool = torch.cat([positive, near_duplicate, others])
    out = mix_hard_negatives(query, pool, n_hardest=3, n_synth=20, n_query_mix=0, positives=positive)
    allowed = pool[hardest_eligible(query[0], pool, 3, threshold=0.9, positive=positive[0])]
    assert not {0, 1} & set(hardest_eligible(query[0], pool, 3, 0.9, positive[0]))
    for point in out[0]:
        assert residual(point, allowed)[0] < 1e-8
    # The unguarded call does use them: the guard is what keeps them out.
    unguarded = mix_hard_negatives(query, pool, n_hardest=3, n_synth=20, false_negative_threshold=None)
    assert max(residual(p, allowed)[0] for p in unguarded[0]) > 1e-3


def test_query_without_eligible_negatives_gets_its_antipode():
    query, positive = unit(2, 8, seed=8), unit(2, 8, seed=9)
    # Query 0's pool: copies of itself (too similar) and its positive; query 1 has real negatives.
    pool = torch.cat([query[:1].repeat(3, 1), positive[:1]])
    out = mix_hard_negatives(query, pool, n_synth=3, n_query_mix=1, positives=positive)
    torch.testing.assert_close(out[0], -query[0].expand(4, 8))
    assert (out[1] @ query[1] > -1 + 1e-3).all()


def test_empty_pool_gives_antipodes():
    query = unit(2, 8, seed=10)
    out = mix_hard_negatives(query, query[:0], n_synth=2, n_query_mix=1)
    torch.testing.assert_close(out, -query[:, None].expand(2, 3, 8))


def test_deterministic_under_a_seeded_generator():
    query, pool = unit(3, 8, seed=9), unit(12, 8, seed=10)
    run = lambda seed: mix_hard_negatives(  # noqa: E731
        query, pool, n_hardest=4, n_synth=5, n_query_mix=2, generator=torch.Generator().manual_seed(seed)
    )
    torch.testing.assert_close(run(1), run(1), rtol=0, atol=0)
    assert not torch.equal(run(1), run(2))


def test_batch_mixed_negatives_feed_both_losses():
    images, texts = unit(6, 8, seed=11).requires_grad_(), unit(6, 8, seed=12).requires_grad_()
    extra = batch_mixed_negatives(images, texts, generator=torch.Generator().manual_seed(0), n_hardest=3, n_synth=4)
    assert extra["text_negatives_per_image"].shape == extra["image_negatives_per_text"].shape == (6, 4, 8)
    hard = HardNegativeClipLoss().double()(images, texts, **extra)["contrastive_loss"]
    plain = ClipLoss().double()(images, texts, extra_text_features=extra["text_negatives_per_image"].flatten(0, 1))
    # More (and harder) negatives can only raise the loss; gradient reaches the features.
    assert hard > HardNegativeClipLoss().double()(images, texts)["contrastive_loss"]
    assert plain["contrastive_loss"] > ClipLoss().double()(images, texts)["contrastive_loss"]
    hard.backward()
    assert images.grad is not None and texts.grad is not None


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        mix_hard_negatives(torch.randn(2, 4), torch.randn(3, 5))
    with pytest.raises(ValueError):
        mix_hard_negatives(torch.randn(2, 4), torch.randn(3, 4), n_hardest=0)
    with pytest.raises(ValueError):
        mix_hard_negatives(torch.randn(2, 4), torch.randn(3, 4), positives=torch.randn(3, 4))


# ---------------------------------------------------------------- captions

CAPTION = re.compile(r"^a (\S+) (\S+) (\S+) in the (.+)$")


def parse(caption):
    size, colour, shape, position = CAPTION.match(caption).groups()
    return {"size": size, "colour": colour, "shape": shape, "position": position}


def scenes(n, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(n)]


@pytest.mark.parametrize("vocabulary", [SYNTHETIC_VOCABULARY, DEFAULT_VOCABULARY])
def test_attribute_swap_changes_exactly_one_attribute(vocabulary):
    rng = np.random.default_rng(1)
    changed = set()
    for scene in scenes(60):
        (out,) = perturb_caption(scene.caption(), rng, kinds=("swap_attribute",), vocabulary=vocabulary)
        before, after = asdict(scene), parse(out)
        diff = [name for name in before if before[name] != after[name]]
        assert len(diff) == 1
        changed.update(diff)
        if vocabulary is SYNTHETIC_VOCABULARY:  # still a caption of the synthetic world
            assert Scene(**after).caption() == out
            assert after["colour"] in COLOURS and after["shape"] in SHAPES
            assert after["size"] in SIZES and after["position"] in POSITIONS
    assert changed == {"size", "colour", "shape", "position"}


def test_attribute_swap_never_picks_a_synonym():
    rng = np.random.default_rng(2)
    for _ in range(30):
        (out,) = perturb_caption("a large dog", rng, kinds=("swap_attribute",))
        assert out.split()[1] in {"small", "large"} - {"large"}  # never big/huge
        (out,) = perturb_caption("a grey dog", rng, kinds=("swap_attribute",))
        assert out.split()[1] not in {"grey", "gray"}


def test_every_perturbation_differs_from_its_caption_and_outputs_are_distinct():
    rng = np.random.default_rng(3)
    texts = [s.caption() for s in scenes(40, seed=1)] + [
        "A red circle and a blue square on the left.",
        "a small star",
        "two dogs",
        "dog",
    ]
    for text in texts:
        out = perturb_caption(text, rng)
        assert all(" ".join(o.lower().split()) != " ".join(text.lower().split()) for o in out)
        assert len(set(out)) == len(out)
    assert perturb_caption("dog", rng) == []


def test_swap_words_trades_two_words_of_one_class():
    rng = np.random.default_rng(4)
    (out,) = perturb_caption("A red circle next to a blue square", rng, kinds=("swap_words",))
    assert out in {"A blue circle next to a red square", "A red square next to a blue circle"}
    # Two attributes of different classes, or two synonyms: nothing to swap.
    assert perturb_caption("a large red circle in the top left", rng, kinds=("swap_words",)) == []
    assert perturb_caption("a big dog next to a large cat", rng, kinds=("swap_words",)) == []


def test_shuffle_keeps_the_words():
    rng = np.random.default_rng(5)
    text = "a large red circle in the top left."
    (out,) = perturb_caption(text, rng, kinds=("shuffle",))
    assert sorted(out.removesuffix(".").split()) == sorted(text.removesuffix(".").split()) and out.endswith(".")
    assert out != text


def test_perturbations_are_deterministic_given_the_rng():
    texts = [s.caption() for s in scenes(20, seed=2)]
    first = perturbation_negatives(texts, np.random.default_rng(7), per_caption=2)
    assert first == perturbation_negatives(texts, np.random.default_rng(7), per_caption=2)
    assert first != perturbation_negatives(texts, np.random.default_rng(8), per_caption=2)


def test_batch_negatives_never_repeat_a_batch_caption():
    # Swapping "red" for "blue" in the first caption would give the second one: a positive, not a negative.
    texts = ["a large red circle in the top left", "a large blue circle in the top left"]
    for seed in range(20):
        out = perturbation_negatives(texts, np.random.default_rng(seed), per_caption=3)
        assert not {t.lower() for t in texts} & {o.lower() for o in out}
        assert len(set(out)) == len(out) and 0 < len(out) <= 6


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown"):
        perturb_caption("a red circle", np.random.default_rng(0), kinds=("negate",))
