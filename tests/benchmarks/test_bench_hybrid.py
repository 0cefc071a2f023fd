"""benchmarks/bench_hybrid.py: its queries never hold the name, and its measuring runs end to end on a small stack."""

from __future__ import annotations

import json

from app.serving.state import SearchState
from benchmarks import bench_hybrid
from tests.helpers.service import stack
from training.synthetic.shapes import generate_dataset


def test_queries_leave_the_name_out():
    queries = bench_hybrid.queries_for(
        "grinning face with big eyes", ("grinning face with big eyes", "smiley"), ("big", "eyes", "grin", "happy")
    )
    assert queries == {"short name": "smiley", "keywords": "big eyes grin happy", "other keywords": "grin happy"}
    assert bench_hybrid.queries_for("cat", ("cat",), ("cat",)) == {"keywords": "cat"}


def test_scores():
    got = bench_hybrid.scores([1, 3, None, 12])
    assert got["R@1"] == 0.25 and got["R@10"] == 0.5 and got["n"] == 4
    assert bench_hybrid.rank_of([5, 7, 9], {9, 7}) == 2 and bench_hybrid.rank_of([1], {2}) is None


def test_measure_and_report_on_a_small_stack(tmp_path):
    ds = generate_dataset(tmp_path / "ds", n=24, seed=0, image_size=32)
    manifest = tmp_path / "items.jsonl"
    with manifest.open("w") as f:
        for i, row in enumerate(ds.rows()):
            meta = {"concept": f"c{i}", "subset": "train" if i % 2 else "heldout_concepts"}
            f.write(
                json.dumps({"id": f"i{i}", "image": str(ds.root / row["image"]), "text": row["text"], **meta}) + "\n"
            )
    words = {f"c{i}": (row["text"], ("shape",), tuple(row["text"].split()[1:3])) for i, row in enumerate(ds.rows())}
    with stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", dataset=manifest) as s:
        queries = bench_hybrid.build_queries(s.session_factory, words)
        state = SearchState(s.settings, s.session_factory)
        state.refresh(force=True)
        quality, _ = bench_hybrid.measure(state, s.session_factory, s.settings, queries, 10)
        timing = bench_hybrid.latency(state, s.session_factory, s.settings, queries[:3], 1)
        state.stop()
    assert {q["set"] for q in queries} == {"short name", "keywords"}
    assert quality["keywords | train | lexical"]["n"] == 12
    result = {
        "house": "synthetic", "model": "test:tiny", "items": 24, "window": 10, "quality": quality,
        "queries": {"short name": 24, "keywords": 24, "other keywords": 0}, "command": "x",
        "latency": {"query vector cached": timing},
    }  # fmt: skip
    text = bench_hybrid.markdown(result)
    assert "| vector |" in text and bench_hybrid.VARIANTS[0][0] in text and "| query vector cached | hybrid |" in text
