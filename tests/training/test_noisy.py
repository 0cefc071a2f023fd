import numpy as np
import pytest

from training.noisy import down_weights, pair_scores, relative_scores, select_noisy


def _aligned(n=100, d=16, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, d)).astype(np.float32)
    txt = img + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return img, txt


def test_planted_mismatched_pairs_are_caught():
    img, txt = _aligned()
    planted = [3, 17, 42, 64, 99]
    txt[planted] = txt[np.roll(planted, 1)]  # captions of other images
    for scores in (pair_scores(img, txt), relative_scores(img, txt)):
        report = select_noisy(scores, 0.05)
        assert sorted(report.dropped) == planted


def test_fraction_zero_drops_nothing_and_bad_fractions_raise():
    img, txt = _aligned(10)
    assert select_noisy(pair_scores(img, txt), 0.0).dropped == []
    with pytest.raises(ValueError):
        select_noisy(pair_scores(img, txt), 1.0)


def test_down_weights_ramp_over_the_worst():
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8], dtype=np.float32)
    w = down_weights(scores, 0.4, floor=0.2)
    assert w[1] == pytest.approx(0.2) and 0.2 < w[3] < 1.0 and w[[0, 2, 4]].tolist() == [1.0, 1.0, 1.0]


def test_trainer_drops_and_reports_the_worst_pairs(tmp_path):
    import json

    from tests.helpers.training_runs import train_config
    from training.synthetic.shapes import generate_dataset
    from training.trainer import finetune

    manifest = generate_dataset(tmp_path / "ds", n=48, seed=0, image_size=32).manifest
    result = finetune(train_config(manifest, tmp_path / "run", data={"drop_noisy_fraction": 0.25}))
    noisy = json.loads((tmp_path / "run" / "noisy_pairs.json").read_text())
    assert result.noisy_pairs["dropped"] == noisy["dropped"] == round(0.25 * noisy["scored"])
    assert len(noisy["examples"]) == noisy["dropped"] and " | " in noisy["examples"][0]


@pytest.mark.slow
def test_the_real_model_catches_planted_mismatched_captions(tmp_path):
    """Bootstrapped lit-mini on the synthetic world: swapped captions score lowest."""
    from crossmodal_kernel.loading import load_model
    from training.bootstrap import BootstrapConfig, bootstrap_heads
    from training.pairs import Pair
    from training.synthetic.shapes import generate_dataset
    from training.validation import drop_noisy_pairs

    ds = generate_dataset(tmp_path / "ds", n=300, seed=2)
    rows = ds.rows()
    loaded = load_model("builtin:lit-mini", "cpu")
    bootstrap_heads(loaded, [(str(ds.root / r["image"]), r["text"]) for r in rows], BootstrapConfig(num_workers=0))
    pairs = [Pair(str(ds.root / r["image"]), r["text"]) for r in rows]
    rng = np.random.default_rng(0)
    planted = sorted(rng.choice(len(pairs), size=15, replace=False).tolist())
    for i in planted:  # a caption from an image that differs in colour and shape
        other = next(r for r in rows if r["colour"] != rows[i]["colour"] and r["shape"] != rows[i]["shape"])
        pairs[i] = Pair(pairs[i].image, other["text"])
    _, report = drop_noisy_pairs(loaded, pairs, 15 / len(pairs))
    caught = len(set(report["dropped_indices"]) & set(planted))
    assert caught >= 12, f"caught {caught} of 15 planted mismatches"
