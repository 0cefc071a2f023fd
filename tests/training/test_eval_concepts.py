"""The concept hit rule on tiny hand-made embeddings whose answers are known."""

import json

import numpy as np
import pytest

from training.eval_sets import EvalPairs, concept_report, concept_texts, manifest_pairs
from training.evaluate import chance_recall, concept_retrieval_metrics

E = np.eye(4, dtype=np.float32)


def unit(*v):
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_t2i_hits_any_house_drawing_of_the_concept():
    # Concept A drawn twice (a1 along e0, a2 along e1), B once along e2, C once along e3.
    img = np.stack([E[0], E[1], E[2], E[3]])
    concepts = ["A", "A", "B", "C"]
    # Query A points at a2 (the second house's drawing): a hit at rank 1. Query B points at a1: B's
    # image comes second. Query C points between C and B, nearer C: rank 1.
    queries = np.stack([E[1], unit(1, 0, 0.5, 0), unit(0, 0, 0.4, 1)])
    out = concept_retrieval_metrics(img, concepts, queries, ["A", "B", "C"], queries, [{"A"}, {"B"}, {"C"}])
    assert out["t2i_R@1"] == pytest.approx(2 / 3)
    assert out["t2i_R@5"] == 1.0 and out["t2i_median_rank"] == 1.0
    assert out["t2i_pool"] == 4 and out["t2i_queries"] == 3
    # Random ranking: A has 2 hits of 4, B and C one each.
    assert out["t2i_chance_R@1"] == pytest.approx((2 / 4 + 1 / 4 + 1 / 4) / 3)


def test_i2t_hits_the_name_or_any_caption_each_counted_once():
    img = np.stack([E[0], E[1], E[2]])
    concepts = ["cat", "dog", "cake"]
    # The pool: "cat face", "dog face", "birthday cake", "face", "pet".
    owners = [{"cat"}, {"dog"}, {"cake"}, {"cat", "dog"}, {"cat", "dog"}]
    text = np.stack([unit(0, 1, 0.2, 0), unit(0, 0.2, 1, 0), unit(1, 0, 0, 0.1), E[0], unit(0, 0, 1, 0.5)])
    out = concept_retrieval_metrics(img, concepts, text[:3], concepts, text, owners)
    # cat image e0: scores cat face 0, dog face 0, birthday cake 0.995, face 1.0, pet 0 -> "face" first: hit.
    # dog image e1: cat face 0.98, dog face 0.196, cake 0, face 0, pet 0 -> "cat face" first, dog face 2nd.
    # cake image e2: cat face 0.196, dog face 0.98, cake 0, face 0, pet 0.894 -> cake ties the rest last:
    #   ties rank the hit last, so "birthday cake" is 5th.
    assert out["i2t_R@1"] == pytest.approx(1 / 3)
    assert out["i2t_R@5"] == 1.0 and out["i2t_median_rank"] == 2.0
    assert out["i2t_pool"] == 5
    assert out["i2t_chance_R@1"] == pytest.approx((3 / 5 + 3 / 5 + 1 / 5) / 3)


def test_chance_recall_matches_a_count():
    # 2 hits among 5, top 2: 1 - C(3, 2) / C(5, 2) = 1 - 3/10.
    assert chance_recall(5, [2], 2) == pytest.approx(0.7)
    assert chance_recall(5, [5], 1) == 1.0 and chance_recall(3, [1], 10) == 1.0


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_manifest_with_a_concept_column_is_scored_by_concept(tmp_path):
    from PIL import Image

    rows = []
    for house, colour in (("h1", (255, 0, 0)), ("h2", (0, 0, 255))):
        for concept, name, captions in (("A", "cat face", ["cat", "face"]), ("B", "dog face", ["dog", "face"])):
            name_png = f"{house}-{concept}.png"
            Image.new("RGB", (4, 4), colour).save(tmp_path / name_png)
            rows.append({"image": name_png, "text": name, "captions": captions, "concept": concept, "house": house})
    _write(tmp_path / "set.jsonl", rows)
    pairs = manifest_pairs(tmp_path / "set.jsonl")
    assert pairs.concepts == ["A", "B", "A", "B"] and pairs.captions is not None
    queries, query_concepts, pool, owners = concept_texts(pairs)
    assert queries == ["cat face", "dog face"] and query_concepts == ["A", "B"]
    assert pool == ["cat face", "cat", "face", "dog face", "dog"]
    assert owners[pool.index("face")] == frozenset({"A", "B"})

    # Images: A's drawings along e0 / e1, B's along e2 / e3; texts put "cat face" near A's second house.
    img = np.stack([E[0], E[2], E[1], E[3]])
    vectors = {"cat face": E[1], "dog face": E[2], "cat": E[0], "dog": E[3], "face": unit(1, 1, 1, 1)}
    report = concept_report(img, pairs, lambda texts: np.stack([vectors[t] for t in texts]))
    assert report["hit_rule"] == "concept" and report["concepts"] == 2
    assert report["t2i_R@1"] == 1.0 and report["t2i_pool"] == 4
    assert report["i2t_names_pool"] == 2 and report["i2t_pool"] == 5


def test_a_manifest_without_a_concept_column_keeps_the_caption_rule(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    _write(tmp_path / "set.jsonl", [{"image": "a.png", "text": "x"}])
    pairs = manifest_pairs(tmp_path / "set.jsonl")
    assert pairs.concepts is None
    with pytest.raises(ValueError):
        concept_texts(EvalPairs(["a"], ["x"]))
