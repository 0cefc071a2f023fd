"""probe_text_tower.py: the text tower's nearest neighbours on the train and shift pools' words."""

from __future__ import annotations

from argparse import Namespace

import pytest

from benchmarks import probe_text_tower as probe


@pytest.mark.slow
def test_the_probe_counts_every_phrase_and_scene_and_the_control_beats_chance():
    encode = probe.PooledText("builtin:lit-mini")
    words = {pool: probe.word_accuracy(encode, pool) for pool in ("train", "shift")}
    # train: every synonym but the canonical phrase itself; shift: every phrase of the pool
    assert words["train"]["colour"][1] == 8 and words["shift"]["colour"][1] == 16
    assert all(0 <= hit <= n for pool in words.values() for hit, n in pool.values())
    captions = {pool: probe.caption_accuracy(encode, pool, seed=0) for pool in ("train", "shift")}
    assert set(captions["train"]) == {*probe.ATTRIBUTES, "all four"}
    assert captions["train"]["all four"] > 10 * probe.CHANCE["all four"]  # the control knows its own words
    fake_probes = {p: dict.fromkeys(probe.ATTRIBUTES, 0.5) for p in ("train", "shift")}
    md = probe.markdown(Namespace(model="builtin:lit-mini"), words, captions, fake_probes, 1.0)
    assert "| colour | 0.125 |" in md and "0.062 on shift wording" in md
