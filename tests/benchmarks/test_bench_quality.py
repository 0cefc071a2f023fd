"""bench_quality.py names its runs so that runs of another model or unlocking never overwrite each other."""

from __future__ import annotations

from argparse import Namespace

import pytest

from benchmarks import bench_quality


def _args(**over):
    defaults = {"model": "builtin:lit-mini", "image_groups": 1, "text_layers": 1, "steps": 30, "lr": 2e-4}
    return Namespace(**{**defaults, **over})


def test_default_run_keeps_its_historic_section_name():
    suffix, label, prose, flags = bench_quality.setup(_args())
    assert (suffix, label, flags) == ("", "", "")
    assert "global average pooling" in prose


def test_other_models_and_unlocking_get_their_own_section_and_reproduce_flags():
    suffix, label, prose, flags = bench_quality.setup(_args(model="builtin:lit-mini-spp"))
    assert (suffix, label, flags) == ("-spp", ", lit-mini-spp", " --model builtin:lit-mini-spp")
    assert "spatial pyramid" in prose
    suffix, label, _, flags = bench_quality.setup(_args(image_groups=6))
    assert suffix == "-g6t1" and flags == " --image-groups 6 --text-layers 1"
    assert label == ", 6 image groups / 1 text layers unlocked"


def test_another_schedule_gets_its_own_section_and_the_lr_flag():
    suffix, label, _, flags = bench_quality.setup(_args(steps=90))
    assert (suffix, flags) == ("-s90", "")  # --steps is on every reproduce line already
    assert label == ", 90 steps at lr 0.0002"
    suffix, _, _, flags = bench_quality.setup(_args(steps=90, lr=5e-4, image_groups=8))
    assert suffix == "-s90-lr0.0005-g8t1"
    assert flags == " --lr 0.0005 --image-groups 8 --text-layers 1"


def test_every_replicable_recipe_is_a_valid_hard_negative_config():
    from training.config import HardNegativeConfig

    for name, recipe in bench_quality.RECIPES.items():
        assert HardNegativeConfig.model_validate(recipe).enabled, name


def test_replicate_reports_the_paired_gain_per_seed_and_per_swap(monkeypatch, tmp_path):
    """The summary is computed from the runs: fake runs with known scores give known gains."""
    scores = {  # (seed, output folder) -> (binding colour, binding order, t2i R@1)
        (0, "b"): (0.80, 0.90, 0.90), (0, "d0"): (0.90, 0.90, 0.92),
        (1, "b"): (0.70, 0.80, 0.90), (1, "d0"): (0.70, 0.90, 0.89),
    }  # fmt: skip

    def report(colour, order, r1):
        return {"binding_acc": (colour + order) / 2, "binding_acc_colour": colour, "binding_acc_order": order,
                "t2i_R@1": r1}  # fmt: skip

    class FakeData:
        def hard_rows(self):
            return [None] * 10

    def prepare(world, n, seed, tmp, model):
        return FakeData(), ("colour", "order"), f"s{seed}"

    def train_variant(args, ds, attributes, base, out, seed=0, **over):
        return report(*scores[(seed, out.name)])

    monkeypatch.setattr(bench_quality, "prepare", prepare)
    monkeypatch.setattr(bench_quality, "evaluate", lambda spec, ds, attributes: report(0.5, 0.5, 0.5))
    monkeypatch.setattr(bench_quality, "train_variant", train_variant)
    recorded = {}
    keys = ("name", "result", "md")
    monkeypatch.setattr(bench_quality, "record", lambda *a: recorded.update(zip(keys, a, strict=True)))
    args = _args(world="binding", n=100, seeds="0,1", variants="queue (4096)", batch_size=48, tag="t", no_record=False)
    bench_quality.replicate(args)

    summary = recorded["result"]["summary"]["(d) CLIP + queue (4096)"]
    assert recorded["name"] == "quality-binding-seeds-t"
    assert summary["gain_pts"] == pytest.approx([5.0, 5.0])
    assert summary["mean_gain_pts_by_swap"] == pytest.approx({"colour": 5.0, "order": 5.0})
    assert summary["mean_delta_t2i_R@1"] == pytest.approx(0.005)
    assert "by swap colour +5.0, order +5.0" in recorded["md"]
    assert "met." in recorded["md"] and "**not met**" not in recorded["md"]


def test_the_goal_allows_for_float_error_but_not_for_a_lost_recall():
    assert 100 * (113 / 200 - 103 / 200) < 5  # ten more of 200 hard pairs right, in floats
    assert bench_quality.meets_goal(100 * (113 / 200 - 103 / 200), 0.0)
    assert not bench_quality.meets_goal(4.5, 0.01)
    assert not bench_quality.meets_goal(6.0, -0.01)
