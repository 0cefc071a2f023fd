"""probe_shift_render.py: one factor of the shift's rendering at a time."""

from __future__ import annotations

from argparse import Namespace

from benchmarks import probe_shift_render as probe
from training.synthetic.shift import SHIFT_STYLE, TRAIN_STYLE


def test_each_variant_differs_from_the_shift_style_in_one_factor():
    styles = probe.styles()
    assert styles["training renderer"] is None and styles["shift"] == SHIFT_STYLE
    for factor in probe.FACTORS:
        style = styles[f"shift but no {probe.NAMES[factor]}"]
        assert getattr(style, factor) == getattr(TRAIN_STYLE, factor)
        assert all(getattr(style, f) == getattr(SHIFT_STYLE, f) for f in (*probe.FACTORS, "backgrounds") if f != factor)
    only = styles["background only"]
    assert only.backgrounds == SHIFT_STYLE.backgrounds and all(
        getattr(only, f) == getattr(TRAIN_STYLE, f) for f in probe.FACTORS
    )


def test_a_tiny_run_scores_every_style_and_the_table_says_what_is_recovered():
    rows = [{"colour": c, "shape": "circle", "size": "large", "position": "center"} for c in ("red", "blue", "green")]
    scores = probe.score_styles("test:tiny", rows, seed=0)
    assert set(scores) == set(probe.styles()) and all(0.0 <= v <= 1.0 for v in scores.values())
    per_seed = [{**dict.fromkeys(probe.styles(), 0.5), "training renderer": 1.0, "shift": 0.4, "background only": 0.7}]
    md = probe.markdown(Namespace(model="m", seeds="0", n=20), per_seed, 3, 1.0)
    assert "| background only | 0.700 | 0.70x | 50% |" in md and "| shift | 0.400 | 0.40x | — |" in md
    assert "| shift but no blur | 0.500 | 0.50x | 17% |" in md
