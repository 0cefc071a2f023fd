"""training.calibration_sets: an evaluation set's query directions follow its evaluation hit rule."""

from __future__ import annotations

import numpy as np

from training import calibration as cal
from training.calibration_sets import direction_sets
from training.eval_sets import EvalPairs


def test_direction_sets_follow_the_evaluation_hit_rules():
    img = np.eye(4, dtype=np.float32)
    texts = {"cat": [1, 0, 0, 0], "dog": [0, 1, 0, 0], "kitty": [0.9, 0.1, 0, 0], "pet": [0.5, 0.5, 0, 0]}

    def encode(batch):
        return np.asarray([texts[t] for t in batch], dtype=np.float32)

    plain = direction_sets(EvalPairs(["a", "b", "c", "d"], ["cat", "dog", "cat", "dog"]), img, encode)
    t2i = plain[cal.TEXT_TO_IMAGE]
    assert len(t2i.queries) == 2 and t2i.query_keys == [frozenset(["cat"]), frozenset(["dog"])]
    assert t2i.pool_keys[2] == frozenset(["cat"])
    i2i = plain[cal.IMAGE_TO_IMAGE]
    assert i2i.itself.tolist() == [0, 1, 2, 3]  # an image is no hit for itself: "c" is "a"'s only relevant one
    assert cal.judge(i2i).relevant.sum() == 4
    assert cal.judge(plain[cal.TEXT_TO_TEXT]).queries == 0  # distinct captions: no other text is relevant
    grouped = EvalPairs(["a", "b", "c", "d"], ["cat", "dog", "cat", "dog"], concepts=["C", "D", "C", "D"],
                        captions=[("kitty", "pet"), ("pet",), (), ()])  # fmt: skip
    sets = direction_sets(grouped, img, encode)
    i2t = sets[cal.IMAGE_TO_TEXT]
    assert len(i2t.pool) == 4 and frozenset(["C", "D"]) in i2t.pool_keys  # "pet" describes both: one string
    assert sets[cal.TEXT_TO_IMAGE].query_keys == [frozenset(["C"]), frozenset(["D"])]
    t2t = cal.judge(sets[cal.TEXT_TO_TEXT])
    assert t2t.queries == 2 and t2t.relevant.sum() == 3  # cat: kitty, pet; dog: pet (never itself)
