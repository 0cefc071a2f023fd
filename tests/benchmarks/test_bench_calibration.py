"""benchmarks/bench_calibration.py: its set metrics by hand, its measurement and report on clustered vectors,
and its check of the service path on a small stack."""

from __future__ import annotations

import numpy as np
import pytest

from app.db import crud
from benchmarks import bench_calibration as bc
from tests.helpers.service import stack
from training import calibration as cal


def _lists(scores, relevant, positives) -> bc.Lists:
    scores = np.asarray(scores, dtype=np.float64)
    return bc.Lists(scores, np.asarray(relevant, dtype=bool), np.asarray(positives), np.array(["name"] * len(scores)))


def test_per_query_precision_recall_and_f1():
    lists = _lists([[0.9, 0.8, 0.1], [0.5, 0.4, 0.3]], [[1, 0, 1], [0, 0, 0]], [2, 1])
    got = bc.quality(np.array([[True, True, False], [False, False, False]]), lists)
    # query 0: 1 of 2 returned is relevant, 1 of its 2 relevant found: P = R = F1 = 0.5; query 1: nothing
    assert got == {"P": 0.25, "R": 0.25, "F1": 0.25, "returned": 1.0, "n": 2}
    # at 0.1 query 0 returns all three (P 2/3, R 1, F1 0.8) and query 1 three wrong ones (0): mean 0.4, against
    # 1/3 at 0.9 (query 0's first hit alone: P 1, R 1/2) and less between
    assert bc.best_fixed(lists) == pytest.approx(0.1)
    assert bc.quality(lists.scores >= 0.1, lists)["F1"] == pytest.approx(0.4)
    assert bc.quality(lists.scores >= 0.9, lists)["F1"] == pytest.approx(1 / 3)


def _clusters(seed: int, n_concepts: int = 60, per: int = 3, dim: int = 16):
    """Texts and images around one centre per concept, the text scale varying by concept."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_concepts, dim))
    images = np.repeat(centres, per, axis=0) + rng.normal(0, 0.6, (n_concepts * per, dim))
    texts = centres * rng.uniform(0.3, 1.5, (n_concepts, 1)) + rng.normal(0, 0.8, (n_concepts, dim))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(texts), unit(images), np.repeat(np.arange(n_concepts), per)


def test_measure_and_report_on_clustered_vectors():
    texts, images, concept = _clusters(0)
    image_keys = [frozenset([int(c)]) for c in concept]
    text_keys = [frozenset([c]) for c in range(len(texts))]
    fit = {"text->image": cal.Direction(texts[:30], text_keys[:30], images, image_keys),
           "image->text": cal.Direction(images[:90], image_keys[:90], texts, text_keys)}  # fmt: skip
    held_t2i = bc.rank(texts[30:], images, [set(np.flatnonzero(concept == c)) for c in range(30, 60)], 20,
                       ["name"] * 15 + ["keywords"] * 15)  # fmt: skip
    held_i2t = bc.rank(images[90:], texts, [{int(c)} for c in concept[90:]], 20, ["image"] * 90)
    q = bc.measure({"bootstrap": fit, "db": fit}, {"text->image": held_t2i, "image->text": held_i2t}, 20)
    cell = q["db | text->image"]
    assert cell["fit_queries"] == 30 and set(cell["variants"]) == {
        "platt, per query", "isotonic, per query", "platt, cosine only", "isotonic, cosine only"}  # fmt: skip
    assert cell["variants"]["platt, cosine only"]["beta"] == 0.0
    assert set(cell["fixed"]) == {"all", "name", "keywords"} and cell["fixed"]["all"]["n"] == 30
    hindsight = q["hindsight | text->image"]["all"]
    assert hindsight["F1"] >= cell["fixed"]["all"]["F1"]  # the best in hindsight bounds every fixed cutoff
    assert q["top hit | text->image"]["all"]["returned"] == 1.0
    result = {
        "houses": ["a", "b"], "model": "test", "items": 180, "window": 20, "default": "platt, per query",
        "held_concepts": 15, "quality": q, "service": {"queries": 3, "agree": 3}, "command": "python x", "seconds": 1.0,
    }  # fmt: skip
    text = bc.markdown(result)
    assert "| db: relevance >= 0.5 (platt, per query) |" in text and "best fixed min_score in hindsight" in text
    assert text.count("**met**") + text.count("**not met**") == 4 and "for 3 of them" in text


def test_the_service_path_check_on_a_small_stack(tmp_path):
    with stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", n=30) as s:
        with s.session_factory() as session:
            model = crud.get_active_model(session)
            mapping = cal.Calibration("platt", a=30.0, b=-3.0, beta=0.5)
            model.calibration = {"status": "fitted", "dataset": "db", "fitted_at": "now",
                                 "directions": {"text->image": {"map": mapping.as_json()}}}  # fmt: skip
            session.commit()
        got = bc.service_check(s.settings, s.session_factory, ["a red circle", "a blue square", "green"], 20)
    assert {k: got[k] for k in ("queries", "agree")} == {"queries": 3, "agree": 3}
    assert set(got["p50_ms"]) == {f"{m} | {c}" for m in ("vector", "lexical", "hybrid") for c in ("calibrated", "none")}
