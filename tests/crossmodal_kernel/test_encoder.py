from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal_kernel.encoder import Encoder
from crossmodal_kernel.images import to_rgb

TEXTS = ["a red circle", "a blue square", "two green triangles", "", "a very long caption " * 20]


@pytest.fixture(scope="module")
def encoder():
    return Encoder.from_spec("test:tiny", device="cpu", batch_size=2)


def _images(n):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)) for i in range(n)]


def _assert_unit_rows(x, n, d):
    assert x.shape == (n, d) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)


def test_attributes(encoder):
    assert (encoder.spec, encoder.embed_dim, encoder.device) == (
        "test:tiny",
        32,
        torch.device("cpu"),
    )
    assert encoder.amp is False  # AMP is for CUDA only
    assert encoder.preprocess is encoder.loaded.preprocess


def test_unit_norm_float32(encoder):
    _assert_unit_rows(encoder.encode_images(_images(3)), 3, 32)
    _assert_unit_rows(encoder.encode_texts(TEXTS), len(TEXTS), 32)


def test_batching_matches_one_by_one(encoder):
    images = _images(5)
    batched = encoder.encode_images(images)  # batch_size=2: chunks of 2, 2, 1
    single = np.concatenate([encoder.encode_images([im]) for im in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    texts = encoder.encode_texts(TEXTS)
    np.testing.assert_allclose(texts, np.concatenate([encoder.encode_texts([t]) for t in TEXTS]), atol=1e-5)
    big = Encoder(encoder.loaded, batch_size=64)
    np.testing.assert_allclose(big.encode_images(images), batched, atol=1e-5)


def test_image_tensors_match_images(encoder):
    images = _images(3)
    tensors = torch.stack([encoder.preprocess(im) for im in images])
    np.testing.assert_allclose(encoder.encode_image_tensors(tensors), encoder.encode_images(images), atol=1e-6)
    with pytest.raises(ValueError, match="n, 3, H, W"):
        encoder.encode_image_tensors(tensors[0])


def test_empty_input(encoder):
    for out in (
        encoder.encode_images([]),
        encoder.encode_texts([]),
        encoder.encode_image_tensors(torch.zeros(0, 3, 32, 32)),
    ):
        assert out.shape == (0, 32) and out.dtype == np.float32


def test_a_single_string_is_refused(encoder):
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode_texts("a red circle")


def test_any_image_mode_is_accepted(encoder):
    rgb = Image.new("RGB", (40, 30), (200, 30, 30))
    modes = [
        rgb.convert("RGBA"),
        rgb.convert("L"),
        rgb.convert("P"),
        rgb.convert("LA"),
        rgb.convert("CMYK"),
    ]
    _assert_unit_rows(encoder.encode_images(modes), len(modes), 32)
    # An opaque RGBA image is the RGB image; a transparent one is white, not the hidden colour.
    np.testing.assert_allclose(encoder.encode_images([rgb.convert("RGBA")]), encoder.encode_images([rgb]), atol=1e-6)
    clear = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    assert to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)


def test_thread_safe(encoder):
    images, texts = _images(4), TEXTS * 2
    want_images, want_texts = encoder.encode_images(images), encoder.encode_texts(texts)
    with ThreadPoolExecutor(4) as pool:
        image_runs = [pool.submit(encoder.encode_images, images) for _ in range(4)]
        text_runs = [pool.submit(encoder.encode_texts, texts) for _ in range(4)]
        for run in image_runs:
            np.testing.assert_allclose(run.result(), want_images, atol=1e-6)
        for run in text_runs:
            np.testing.assert_allclose(run.result(), want_texts, atol=1e-6)


def test_batch_size_is_validated(encoder):
    with pytest.raises(ValueError, match="batch_size"):
        Encoder(encoder.loaded, batch_size=0)


@pytest.mark.slow
def test_trimming_padding_leaves_hf_text_embeddings_unchanged():
    from crossmodal_kernel.encoder import trim_padding
    from crossmodal_kernel.loading import load_model

    loaded = load_model("builtin:lit-mini", "cpu")
    tokens = loaded.tokenizer(["a red circle", "a much longer caption about a small blue star at the top"])
    trimmed = trim_padding(loaded.model, tokens)
    assert trimmed.shape[1] < tokens.shape[1]
    with torch.inference_mode():
        full = loaded.model.encode_text(tokens)
        short = loaded.model.encode_text(trimmed)
    torch.testing.assert_close(full, short, atol=1e-5, rtol=1e-4)
