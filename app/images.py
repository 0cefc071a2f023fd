"""Validate and decode an untrusted query image, with byte and pixel limits."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from app.errors import ApiError


def decode_query_image(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    if not data:
        raise ApiError(422, "empty_image", "the image is empty")
    if len(data) > max_bytes:
        raise ApiError(413, "image_too_large", f"the image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) between 1x and 2x its own limit; treat both as a bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.width * im.height > max_pixels:
                raise ApiError(
                    413,
                    "too_many_pixels",
                    f"the image is {im.width}x{im.height} pixels; the limit is {max_pixels} pixels",
                )
            im.load()
    except ApiError:
        raise
    except UnidentifiedImageError as e:
        raise ApiError(415, "not_an_image", "the upload is not an image in a format we can read") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ApiError(413, "too_many_pixels", f"the image has too many pixels: {e}") from e
    except Exception as e:  # truncated or corrupt data surfaces as OSError/SyntaxError/ValueError
        raise ApiError(400, "corrupt_image", f"the image could not be decoded: {e}") from e
    return im.convert("RGB")
