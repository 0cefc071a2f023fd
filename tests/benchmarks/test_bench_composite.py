"""benchmarks/bench_composite.py: its pairs follow the one-added-word rule, and it measures and reports end to
end on a small stack, ranking every item through the service as numpy does."""

from __future__ import annotations

import json

from app.serving.state import SearchState
from benchmarks import bench_composite
from tests.helpers.service import stack
from training.synthetic.shapes import generate_dataset


def test_pairs_differ_by_one_added_word_that_is_no_stop_word():
    names = {1: "cat", 2: "cat face", 3: "grinning cat", 4: "cat with wry smile", 5: "the cat", 6: "dog", 7: "hot dog"}
    assert bench_composite.pairs_of(names, 100, 0) == [(1, 2, "face"), (1, 3, "grinning"), (6, 7, "hot")]
    sample = bench_composite.pairs_of(names, 2, 0)
    assert len(sample) == 2 and set(sample) <= {(1, 2, "face"), (1, 3, "grinning"), (6, 7, "hot")}
    assert sample == bench_composite.pairs_of(names, 2, 0)  # seeded


def test_variant_parts():
    minus = bench_composite.variant_parts("cat", 9, "face", "X - B", 0.5)
    assert [(p.kind, p.value, p.weight) for p in minus] == [("text", "cat", 1.0), ("text", "face", -0.5)]
    plus = bench_composite.variant_parts("cat", 9, "face", "X + item Y", 0.25)
    assert [(p.kind, p.value, p.weight) for p in plus] == [("text", "cat", 1.0), ("item", 9, 0.25)]


def test_measure_and_report_on_a_small_stack(tmp_path):
    ds = generate_dataset(tmp_path / "ds", n=16, seed=0, image_size=32)
    manifest = tmp_path / "items.jsonl"
    names = ["circle", "red circle", "square", "blue square", "big blue square", "dot"]
    with manifest.open("w") as f:
        for i, row in enumerate(ds.rows()):
            text = names[i] if i < len(names) else row["text"]
            f.write(json.dumps({"id": f"i{i}", "image": str(ds.root / row["image"]), "text": text}) + "\n")
    with stack(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", dataset=manifest, max_k=5) as s:
        texts = bench_composite.image_items(s.session_factory)
        pairs = bench_composite.pairs_of(texts, 10, 0)
        state = SearchState(s.settings, s.session_factory)
        state.refresh(force=True)
        measured = bench_composite.measure(state, s.session_factory, s.settings, pairs, texts, [0.5])
        state.stop()
    assert [(texts[x], texts[y], b) for x, y, b in pairs] == [
        ("circle", "red circle", "red"), ("square", "blue square", "blue"), ("blue square", "big blue square", "big")
    ]  # fmt: skip
    assert measured["k"] == 16 and measured["service_matches_exact"] == [12, 12]  # all ranked, as numpy ranks them
    rows = measured["rows"]
    assert all(1 <= r <= 16 for row in rows for ranks in [row["base"], *row["runs"].values()] for r in ranks)
    for row in rows:  # an item part at -0.5 can only push its item down, at +0.5 only up
        assert row["runs"]["X - item Y | 0.5 | weighted sum"][1] >= row["base"][1]
        assert row["runs"]["X + item Y | 0.5 | weighted sum"][1] <= row["base"][1]
    summary = bench_composite.summary(rows)
    result = {
        "house": "synthetic", "model": "test:tiny", "items": 16, "n_candidates": 3, "n_pairs": 3, "k": 16,
        "service_matches_exact": measured["service_matches_exact"], "summary": summary, "rows": rows,
        "example_weight": 0.5, "measure_seconds": 1.0, "command": "x",
    }  # fmt: skip
    text = bench_composite.markdown(result)
    assert "| X - item Y | 0.5 | weighted sum |" in text and "| circle | red circle |" in text and "12/12" in text
