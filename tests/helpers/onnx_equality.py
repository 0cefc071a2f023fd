"""Inputs that ONNX and PyTorch encoders must agree on, and the checks that they do."""

from __future__ import annotations

import numpy as np
from PIL import Image

from training.eval_sets import evaluate_pairs, manifest_pairs

MIN_COSINE = 0.9999
RECALLS = ("t2i_R@1", "t2i_R@10", "i2t_R@1", "i2t_R@10")

TEXTS = [
    "a red circle above a small blue square",
    "",
    " ",
    ".",
    "猫がテーブルの上で寝ている",
    "кошка спит на столе",
    "قطة نائمة على الطاولة",
    "🙂🎂🌧",
    "a very long caption that keeps on going past the context " * 40,
    "rain",
]


def images() -> list[Image.Image]:
    """Odd sizes and modes: 1x1, long and thin, huge-ish, grey, palette, transparent."""
    rng = np.random.default_rng(7)

    def noise(w: int, h: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    rgba = Image.fromarray(rng.integers(0, 256, (60, 40, 4), dtype=np.uint8), "RGBA")
    return [
        noise(1, 1),
        noise(3, 500),
        noise(500, 3),
        noise(37, 53),
        noise(1024, 768),
        noise(224, 224),
        noise(90, 90).convert("L"),
        noise(64, 48).convert("P"),
        rgba,
        Image.new("RGB", (128, 128), (255, 255, 255)),
    ]


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_equal_embeddings(reference, candidate, min_cosine: float = MIN_COSINE) -> None:
    """Row by row, over the fixed texts and images, in one batch and one at a time."""
    for encode in ("encode_texts", "encode_images"):
        inputs = TEXTS if encode == "encode_texts" else images()
        want = getattr(reference, encode)(inputs)
        got = getattr(candidate, encode)(inputs)
        worst = float(row_cosines(want, got).min())
        assert worst >= min_cosine, f"{encode}: lowest cosine {worst:.6f}"
        alone = np.concatenate([getattr(candidate, encode)([x]) for x in inputs[:4]])
        assert float(row_cosines(want[:4], alone).min()) >= min_cosine, f"{encode}: one at a time"


def assert_equal_recalls(reference, candidate, dataset_root) -> dict:
    """R@1 and R@10 both ways on a synthetic dataset's test split, identical for both encoders."""
    pairs = manifest_pairs(dataset_root / "manifest.csv", "test")
    want = evaluate_pairs(reference, pairs)
    got = evaluate_pairs(candidate, pairs)
    assert {m: want[m] for m in RECALLS} == {m: got[m] for m in RECALLS}
    return want
