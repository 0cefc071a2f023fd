"""Validate and decode an untrusted query image, with byte and pixel limits."""

from __future__ import annotations

from PIL import Image

from app.api.errors import ApiError
from crossmodal_kernel.images import CorruptImage, ImageDecodeError, NotAnImage, TooManyPixels, open_image

_STATUS = {NotAnImage: 415, TooManyPixels: 413, CorruptImage: 400}


def decode_query_image(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    if not data:
        raise ApiError(422, "empty_image", "the image is empty")
    if len(data) > max_bytes:
        raise ApiError(413, "image_too_large", f"the image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        return open_image(data, max_pixels)
    except ImageDecodeError as e:
        raise ApiError(_STATUS.get(type(e), 400), e.code, str(e)) from e
