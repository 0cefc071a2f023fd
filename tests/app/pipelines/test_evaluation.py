"""Stored evaluation reports: the latest per set under ``evaluations``, and a bounded history over time."""

from __future__ import annotations

from app.db import crud
from app.pipelines.evaluation import HISTORY, store_report
from tests.helpers.service import stack


def test_reports_keep_the_latest_per_set_and_a_bounded_history(tmp_path):
    with stack(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", n=0) as s, s.session_factory() as session:
        model = crud.create_model(session, "test:tiny", name="m")
        for i in range(HISTORY + 3):
            store_report(session, model.id, {"dataset": "db", "split": None, "t2i_R@1": i / 100, "pairs": 3})
        store_report(session, model.id, {"dataset": "/sets/x", "split": "test", "t2i_R@1": 0.5, "seconds": 1.5})
        session.commit()
        report = session.get(type(model), model.id).eval_report
    assert report["evaluations"]["db"]["t2i_R@1"] == (HISTORY + 2) / 100
    assert report["evaluations"]["/sets/x#test"]["t2i_R@1"] == 0.5
    history = report["history"]
    assert (
        len(history) == HISTORY and history[-1]["key"] == "/sets/x#test" and history[-1]["metrics"] == {"t2i_R@1": 0.5}
    )
    assert [h["metrics"]["t2i_R@1"] for h in history[-3:-1]] == [(HISTORY + 1) / 100, (HISTORY + 2) / 100]
    assert all(h["at"] <= history[-1]["at"] for h in history)  # oldest first
