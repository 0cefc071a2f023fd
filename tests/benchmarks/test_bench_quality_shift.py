"""bench_quality.py --models --shift: the shift comparison's sets, verdict and one real (tiny) run."""

from __future__ import annotations

from argparse import Namespace

import numpy as np
import pytest

from benchmarks import _quality_shift, bench_quality
from training.synthetic.captions import SHAPES_WORLD, mentions


def _args(**over):
    defaults = {"models": "builtin:lit-mini", "seeds": "0", "shift": True, "world": "shapes", "n": 100,
                "shift_n": 12, "steps": 30, "batch_size": 48, "lr": 2e-4, "image_groups": 1, "text_layers": 1,
                "captions": "varied", "n_captions": 2, "text_augment": False, "image_augment": False,
                "bootstrap_only": True, "bootstrap_views": 0, "tag": "", "no_record": False,
                "model": "builtin:lit-mini"}  # fmt: skip
    return Namespace(**{**defaults, **over})


def _scores(t2i_in, t2i_shift, i2t_in, i2t_shift):
    return {"in_t2i_R@1": t2i_in, "shift_t2i_R@1": t2i_shift, "in_i2t_R@1": i2t_in, "shift_i2t_R@1": i2t_shift}


def test_the_goal_needs_both_gaps_within_five_points_and_todays_in_distribution():
    assert _quality_shift.meets(_scores(0.96, 0.91, 0.95, 0.90))
    assert not _quality_shift.meets(_scores(0.96, 0.90, 0.95, 0.95))  # t2i 6 points down
    assert not _quality_shift.meets(_scores(0.96, 0.95, 0.95, 0.89))  # i2t 6 points down
    assert not _quality_shift.meets(_scores(0.95, 0.95, 0.95, 0.95))  # no gap, but below today's 0.96


def test_recipes_follow_the_switches():
    assert list(_quality_shift.recipes(_args())) == ["(a) bootstrap (LiT)"]
    plan = _quality_shift.recipes(_args(bootstrap_only=False, text_augment=True, image_augment=True))
    assert plan["(a) bootstrap (LiT)"] is None
    assert plan["(b) CLIP"] == {"augment": {"text": {"multi_caption": True}}}  # varied: one caption per epoch
    assert plan["(f) CLIP + text augmentation"]["augment"]["text"]["paraphrase"] > 0
    assert plan["(g) CLIP + text + image augmentation"]["augment"]["blur"] > 0
    assert _quality_shift.recipes(_args(bootstrap_only=False, captions="canonical"))["(b) CLIP"] == {}


@pytest.mark.slow
def test_a_tiny_real_comparison_scores_the_shift_split_apart(monkeypatch):
    """Bootstrap lit-mini on 80 varied-caption pairs (and one augmented view of each image) and score it:
    every set is measured, the shift split (other wording and rendering) scores below the test split, and
    the shift-words set is worded from the shift pool only."""
    texts: list[list[str]] = []
    real = _quality_shift.Encoder.from_spec

    def spying(spec, device):
        encoder = real(spec, device=device)
        encode = encoder.encode_texts
        encoder.encode_texts = lambda t: (texts.append(list(t)), encode(t))[1]
        return encoder

    monkeypatch.setattr(_quality_shift.Encoder, "from_spec", spying)
    recorded = {}
    keys = ("name", "result", "md")
    monkeypatch.setattr(bench_quality, "record", lambda *a: recorded.update(zip(keys, a, strict=True)))
    views: list[int] = []
    real_heads = bench_quality.bootstrap_heads

    def counting(loaded, train, cfg, **kw):
        views.append(cfg.image_views)
        return real_heads(loaded, train, cfg, **kw)

    monkeypatch.setattr(bench_quality, "bootstrap_heads", counting)
    result = bench_quality.compare_models(_args(bootstrap_views=1))
    assert views == [1]

    run = result["seeds"][0]["runs"]["lit-mini (a) bootstrap (LiT)"]
    assert set(run) >= {f"{s}_{d}_R@1" for s in _quality_shift.SETS for d in ("t2i", "i2t")}
    assert run["in_t2i_R@1"] >= 0.7 and run["in_t2i_R@1"] > run["shift_t2i_R@1"]
    assert len(texts) == len(_quality_shift.SETS)
    words = texts[_quality_shift.SETS.index("words")]
    assert len(words) == 10 and words != texts[_quality_shift.SETS.index("in")]
    shift_vocab, train_vocab = SHAPES_WORLD["shift"], SHAPES_WORLD["train"]
    assert all(mentions(w, "colour", shift_vocab) and not mentions(w, "colour", train_vocab) for w in words)
    assert recorded["name"] == "quality-shift-models-varied2-boot-views1"
    assert "bootstrap on 1 augmented views" in recorded["md"] and "--bootstrap-views 1" in recorded["md"]
    gap = 100 * (run["shift_t2i_R@1"] - run["in_t2i_R@1"])
    row = f"| lit-mini (a) bootstrap (LiT) | {run['in_t2i_R@1']:.3f} | {run['shift_t2i_R@1']:.3f} | {gap:+.1f} pts"
    assert row in recorded["md"]
    assert np.isclose(result["means"]["lit-mini (a) bootstrap (LiT)"]["shift_t2i_R@1"], run["shift_t2i_R@1"])


def test_varied_captions_and_text_augmentation_get_their_own_sections_and_flags():
    args = _args(captions="varied", n_captions=3, text_augment=True, shift=True)
    suffix, label, _, flags = bench_quality.setup(args)
    assert suffix == "-varied3-textaug-shift"
    assert flags == " --captions varied --n-captions 3 --text-augment --shift --shift-n 12"
    assert label == ", varied captions (3 per image), text augmentation, with the shift split"
    assert _quality_shift.text_policy(args) == {"augment": {"text": _quality_shift.TEXT_AUG}}
    assert _quality_shift.text_policy(_args(captions="canonical")) == {}  # recorded sections train as before
    assert _quality_shift.wording(_args(captions="canonical")) == {}
