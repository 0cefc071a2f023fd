"""The one image decoder: paths and bytes alike, one bomb guard, typed errors."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from crossmodal_kernel.images import CorruptImage, NotAnImage, TooManyPixels, open_image


def _png(size=(8, 8), mode="RGB", colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_paths_and_bytes_decode_the_same(tmp_path):
    data = _png()
    (tmp_path / "a.png").write_bytes(data)
    from_path, from_bytes = open_image(str(tmp_path / "a.png")), open_image(data)
    assert from_path.mode == from_bytes.mode == "RGB" and from_path.tobytes() == from_bytes.tobytes()


def test_transparent_pixels_become_white():
    image = open_image(_png(mode="RGBA", colour=(255, 0, 0, 0)))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


def test_the_pixel_limit_is_checked_before_decoding():
    with pytest.raises(TooManyPixels, match="2000x2000.*limit is 1000000"):
        open_image(_png((2000, 2000)), max_pixels=1_000_000)
    assert open_image(_png((2000, 2000))).size == (2000, 2000)  # no limit given: PIL's own applies


def test_pils_own_bomb_warning_is_an_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(TooManyPixels):
        open_image(_png((12, 12)))  # between 1x and 2x PIL's limit: a warning, treated as a bomb


@pytest.mark.parametrize(
    "data, error, code",
    [(b"%PDF-1.4 not a picture", NotAnImage, "not_an_image"), (_png((64, 64))[:60], CorruptImage, "corrupt_image")],
)
def test_unusable_data_raises_a_typed_error(data, error, code):
    with pytest.raises(error) as info:
        open_image(data)
    assert info.value.code == code and isinstance(info.value, ValueError)


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_image(str(tmp_path / "nope.png"))


def test_loader_workers_fall_back_to_none_where_shared_memory_is_small(tmp_path, monkeypatch, caplog):
    import shutil
    from collections import namedtuple

    from crossmodal_kernel import images

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(64 << 20, 0, 64 << 20))  # Docker's default
    assert images.loader_workers(4) == 0 and "--shm-size" in caplog.text
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(8 << 30, 0, 8 << 30))
    assert images.loader_workers(4) == 4 and images.loader_workers(0) == 0
