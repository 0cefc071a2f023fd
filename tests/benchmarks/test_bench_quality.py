"""bench_quality.py names its runs so that runs of another model or unlocking never overwrite each other."""

from __future__ import annotations

from argparse import Namespace

from benchmarks import bench_quality


def _args(**over):
    return Namespace(**{"model": "builtin:lit-mini", "image_groups": 1, "text_layers": 1, **over})


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
