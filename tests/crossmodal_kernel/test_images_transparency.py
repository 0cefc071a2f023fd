"""One transparency rule for every decode path: a see-through PNG is the same picture on white.

Ingest (``ImageFiles`` in DataLoader workers), query uploads (``open_image`` on bytes), files by
path or stream, and PIL images handed straight to ``Encoder.encode_images`` must all give the
same RGB pixels; tests/training/test_evaluate_transparency.py checks training and evaluation.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal_kernel.encoder import Encoder
from crossmodal_kernel.images import ImageFiles, has_transparency, open_image, to_rgb


def _save(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def transparent_pngs() -> dict[str, bytes]:
    """Each way a PNG can be see-through: an alpha band (RGBA, LA), a palette with per-entry
    alpha, and a ``tRNS`` colour key on an RGB or a grey image."""
    alphas = np.array([[0, 64, 128, 255]] * 4, dtype=np.uint8)
    rgb = np.stack([np.full((4, 4), 200), np.arange(16).reshape(4, 4) * 10, np.full((4, 4), 30)], axis=-1).astype(
        np.uint8
    )
    palette = Image.new("P", (4, 4))
    palette.putpalette([255, 0, 0, 0, 0, 255, 0, 200, 0] + [0] * (3 * 253))
    palette.putdata([0, 1, 2, 1] * 4)
    keyed_rgb = Image.fromarray(rgb)
    keyed_rgb.putpixel((0, 0), (1, 2, 3))
    keyed_grey = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16)
    return {
        "RGBA": _save(Image.fromarray(np.dstack([rgb, alphas]), "RGBA")),
        "LA": _save(Image.fromarray(np.dstack([rgb[..., 1], alphas]), "LA")),
        "P": _save(palette, transparency=bytes([0, 128, 255])),  # clear, half, opaque entries
        "RGB+tRNS": _save(keyed_rgb, transparency=(1, 2, 3)),
        "L+tRNS": _save(keyed_grey, transparency=32),
    }


def on_white(data: bytes) -> np.ndarray:
    """The rule written out: each channel ``c`` with alpha ``a`` becomes ``(c a + 255 (255 - a)) / 255``."""
    rgba = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"), dtype=np.float64)
    colour, alpha = rgba[..., :3], rgba[..., 3:] / 255
    return colour * alpha + 255 * (1 - alpha)


@pytest.fixture(params=sorted(transparent_pngs()))
def png(request, tmp_path) -> tuple[bytes, str]:
    data = transparent_pngs()[request.param]
    path = tmp_path / f"{request.param}.png"
    path.write_bytes(data)
    return data, str(path)


def _recording_loaded(seen: list[np.ndarray]) -> SimpleNamespace:
    """A stand-in for a loaded model whose preprocess records the pixels it is given."""

    def preprocess(image: Image.Image) -> torch.Tensor:
        assert image.mode == "RGB"
        seen.append(np.asarray(image))
        return torch.zeros(3, 2, 2)

    model = SimpleNamespace(encode_image=lambda batch, normalize=False: torch.ones(len(batch), 4))
    return SimpleNamespace(
        model=model, tokenizer=None, preprocess=preprocess, spec="fake", embed_dim=4, device=torch.device("cpu")
    )


def test_every_kernel_path_gives_the_same_pixels_on_white(png):
    data, path = png
    expected = on_white(data)
    with open(path, "rb") as stream:
        decoded = {
            "path": np.asarray(open_image(path)),
            "bytes (query upload)": np.asarray(open_image(data)),
            "stream": np.asarray(open_image(stream)),
        }
    seen: list[np.ndarray] = []
    loaded = _recording_loaded(seen)
    ImageFiles([(7, path)], loaded.preprocess)[0]  # ingest and bootstrap decode in these workers
    Encoder(loaded).encode_images([Image.open(io.BytesIO(data))])  # a PIL image handed in undecoded
    decoded |= {"ImageFiles": seen[0], "Encoder.encode_images": seen[1]}
    for name, pixels in decoded.items():
        assert pixels.shape == (4, 4, 3) and pixels.dtype == np.uint8, name
        assert np.array_equal(pixels, decoded["path"]), name
    assert np.abs(decoded["path"].astype(np.float64) - expected).max() <= 1.0


def test_clear_pixels_are_white_and_opaque_ones_keep_their_colour():
    pngs = transparent_pngs()
    rgba = np.asarray(open_image(pngs["RGBA"]))
    assert tuple(rgba[0, 0]) == (255, 255, 255) and tuple(rgba[0, 3]) == (200, 30, 30)
    keyed = np.asarray(open_image(pngs["RGB+tRNS"]))
    assert tuple(keyed[0, 0]) == (255, 255, 255) and tuple(keyed[1, 1]) == (200, 50, 30)
    grey = np.asarray(open_image(pngs["L+tRNS"]))
    assert tuple(grey[0, 2]) == (255, 255, 255) and tuple(grey[0, 1]) == (16, 16, 16)


def test_opaque_images_pass_through_untouched():
    rgb = Image.new("RGB", (3, 3), (10, 20, 30))
    assert to_rgb(rgb) is rgb and not has_transparency(rgb)
    assert has_transparency(Image.new("RGBA", (1, 1))) and has_transparency(Image.new("La", (1, 1)))
    grey = to_rgb(Image.new("L", (2, 2), 40))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (40, 40, 40)
