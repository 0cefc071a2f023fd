import json

import numpy as np
import pytest

from training.evaluate import (
    binding_accuracy,
    evaluate_synthetic,
    report_markdown,
    retrieval_metrics,
)
from training.probes import class_embeddings, linear_probe, zeroshot_accuracy


def naive_retrieval(img, txt, txt2img, keys):
    """Line-by-line definition: sort candidates by score, wrong ones first among ties."""
    sims = txt.astype(np.float64) @ img.astype(np.float64).T
    keys_of_image = [set() for _ in img]
    for t, j in enumerate(txt2img):
        keys_of_image[j].add(keys[t])

    def first_match(scores, matches):
        order = sorted(range(len(scores)), key=lambda c: (-scores[c], matches[c]))
        return next(pos + 1 for pos, c in enumerate(order) if matches[c])

    out = {}
    t2i = [first_match(sims[t], [keys[t] in keys_of_image[j] for j in range(len(img))]) for t in range(len(txt))]
    i2t = [
        first_match(sims[:, j], [keys[t] in keys_of_image[j] for t in range(len(txt))])
        for j in range(len(img))
        if keys_of_image[j]
    ]
    for name, ranks in (("t2i", t2i), ("i2t", i2t)):
        for k in (1, 5, 10):
            out[f"{name}_R@{k}"] = sum(r <= k for r in ranks) / len(ranks)
        out[f"{name}_median_rank"] = float(np.median(ranks))
    return out


def _planted(rng, n_img=40, n_txt=70, d=8, integer=False):
    """Random embeddings; images with 0, 1 or several captions; captions repeated across images."""
    make = (lambda *s: rng.integers(-2, 3, s)) if integer else (lambda *s: rng.standard_normal(s))
    img = np.asarray(make(n_img, d), dtype=np.float32)
    txt2img = rng.integers(0, n_img - 5, n_txt)  # the last five images have no caption
    captions = [f"caption {rng.integers(0, 15)}" for _ in range(n_txt)]
    txt = img[txt2img] + np.asarray(make(n_txt, d), dtype=np.float32)
    return img, txt, txt2img, captions


@pytest.mark.parametrize("integer", [False, True], ids=["gaussian", "integer-with-ties"])
@pytest.mark.parametrize("use_keys", [False, True], ids=["pairs-only", "caption-keys"])
def test_retrieval_matches_the_naive_definition(integer, use_keys):
    rng = np.random.default_rng(7)
    img, txt, txt2img, captions = _planted(rng, integer=integer)
    keys = captions if use_keys else None
    expected = naive_retrieval(img, txt, txt2img, captions if use_keys else list(txt2img))
    for chunk_size in (None, 1, 7):
        got = retrieval_metrics(img, txt, txt2img, keys, chunk_size=chunk_size)
        assert got == pytest.approx(expected)


def test_duplicate_captions_count_as_hits():
    # Two images with the same caption, text 0 describes image 0 but sits on image 1.
    img = np.eye(2, dtype=np.float32)
    txt = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    plain = retrieval_metrics(img, txt, [0, 1])
    keyed = retrieval_metrics(img, txt, [0, 1], keys=["a red circle", "a red circle"])
    assert plain["t2i_R@1"] == 0.5 and keyed["t2i_R@1"] == 1.0
    assert keyed["i2t_R@1"] == 1.0


def test_perfect_embeddings_rank_first():
    e = np.eye(12, dtype=np.float32)
    got = retrieval_metrics(e, e, np.arange(12))
    assert all(got[f"{d}_R@{k}"] == 1.0 for d in ("t2i", "i2t") for k in (1, 5, 10))
    assert got["t2i_median_rank"] == got["i2t_median_rank"] == 1.0


def test_reversed_scores_give_known_ranks_and_ties_rank_last():
    # 1-D embeddings: every text scores image j as j + 1, so text i's image has rank 20 - i.
    img = np.arange(1, 21, dtype=np.float32)[:, None]
    txt = np.ones((20, 1), dtype=np.float32)
    got = retrieval_metrics(img, txt, np.arange(20), chunk_size=3)
    assert got["t2i_R@1"] == pytest.approx(1 / 20)
    assert got["t2i_R@5"] == pytest.approx(5 / 20)
    assert got["t2i_R@10"] == pytest.approx(10 / 20)
    assert got["t2i_median_rank"] == 10.5
    # Every text scores the same for a given image: the 19 wrong ones rank ahead.
    assert got["i2t_R@10"] == 0.0 and got["i2t_median_rank"] == 20.0


def test_retrieval_validates_inputs():
    e = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="txt2img"):
        retrieval_metrics(e, e, [0, 1, 3])
    with pytest.raises(ValueError, match="widths"):
        retrieval_metrics(e, np.eye(3, 4, dtype=np.float32), [0, 1, 2])


def test_binding_accuracy_by_hand():
    img = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    true = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.float32)
    distractor = np.array([[0, 1], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    # pair 0 right, pair 1 wrong, pair 2 a tie (wrong), pair 3 wrong
    got = binding_accuracy(img, true, distractor, ["colour", "colour", "shape", "shape"])
    assert got == {
        "binding_acc": 0.25,
        "binding_acc_colour": 0.5,
        "binding_acc_shape": 0.0,
        "binding_acc_position": None,
    }
    assert binding_accuracy(img, true, distractor) == {"binding_acc": 0.25}


def _blobs(rng, n, centres, spread):
    y = rng.integers(0, len(centres), n)
    return centres[y] + spread * rng.standard_normal((n, centres.shape[1])), y


def test_linear_probe_separates_blobs_and_is_deterministic():
    rng = np.random.default_rng(0)
    centres = 3 * rng.standard_normal((4, 16))
    train_x, train_y = _blobs(rng, 200, centres, 0.5)
    test_x, test_y = _blobs(rng, 100, centres, 0.5)
    got = linear_probe(train_x, train_y, test_x, test_y)
    assert got["probe_top1"] >= 0.98 and got["probe_val_top1"] >= 0.95
    assert linear_probe(train_x, train_y, test_x, test_y) == got


def test_linear_probe_on_random_labels_is_near_chance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 16))
    y = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 500)]
    got = linear_probe(x[:300], y[:300], x[300:], y[300:])
    assert 0.1 < got["probe_top1"] < 0.45


def test_zeroshot_by_hand():
    # Class 1's two prompts disagree; only their average points at the images of class 1.
    prompts = np.array(
        [
            [[1, 0, 0], [1, 0, 0]],
            [[0, 1, 1], [0, 1, -1]],
            [[0, 0, 1], [0, 0, 1]],
        ],
        dtype=np.float32,
    )
    classes = class_embeddings(prompts)
    np.testing.assert_allclose(classes, np.eye(3), atol=1e-6)
    img = np.array([[0.9, 0.1, 0], [0.1, 0.9, 0], [0, 0.2, 0.8], [0, 0.8, 0.2]], dtype=np.float32)
    got = zeroshot_accuracy(img, classes, [0, 1, 2, 2])
    assert got == {"zeroshot_top1": 0.75, "zeroshot_top5": None}
    # Six classes scoring 1..6 for every image: the image of class c ranks it 6 - c.
    graded = zeroshot_accuracy(np.ones((6, 1)), np.arange(1, 7)[:, None], np.arange(6))
    assert graded == pytest.approx({"zeroshot_top1": 1 / 6, "zeroshot_top5": 5 / 6})


def test_evaluate_synthetic_with_tiny_model(tmp_path):
    from crossmodal_kernel.encoder import Encoder
    from training.synthetic.shapes import generate_dataset

    dataset = generate_dataset(tmp_path, n=60, image_size=32)
    encoder = Encoder.from_spec("test:tiny", device="cpu")
    seen = []
    report = evaluate_synthetic(encoder, dataset, chunk_size=16, progress=lambda *a: seen.append(a))

    n = len(dataset.rows("test"))
    assert report["n_images"] == report["n_texts"] == n and report["n_hard"] == len(dataset.hard_rows())
    rates = [k for k in report if "_R@" in k or k.endswith(("_acc", "_top1")) or "_acc_" in k]
    assert len(rates) == 6 + 4 + 3  # retrieval, binding (+ colour/shape/position), probe/val/zero-shot
    assert all(report[k] is None or 0.0 <= report[k] <= 1.0 for k in rates)
    assert 1 <= report["t2i_median_rank"] <= n and 1 <= report["i2t_median_rank"] <= n
    assert report["zeroshot_top5"] is not None  # eight colours
    assert seen[-1] == ("encode images", 48 + n, 48 + n)  # train and test images, each once
    json.dumps(report, allow_nan=False)

    text = report_markdown(report)
    assert "| text → image |" in text and "binding: colour" in text and "probe top-1 (colour)" in text
