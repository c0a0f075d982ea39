"""Decoding untrusted image bytes into RGB tensors, with limits and clear errors.

Every service that takes images from users goes through `decode_image`, so that a corrupt
file, a decompression bomb or an unusual mode gets the same answer everywhere.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 64_000_000

# Modes whose samples are 16- or 32-bit integers; Pillow's convert("RGB") clips them
# instead of scaling, which would turn most 16-bit images white.
_WIDE_INTEGER_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class InvalidImage(ValueError):
    """The bytes are not an image we can score; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    """An image as 8-bit RGB, with the hash of the bytes it came from."""

    name: str
    pixels: np.ndarray  # (H, W, 3) uint8
    content_hash: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def content_hash(data: bytes) -> str:
    """The sha256 of the encoded bytes: the identity of an image everywhere in the project."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decodes `data` into RGB, converting any mode, or raises `InvalidImage`.

    >>> import io; from PIL import Image
    >>> buf = io.BytesIO(); Image.new("CMYK", (4, 2), (0, 255, 0, 0)).save(buf, "JPEG")
    >>> decode_image(buf.getvalue(), "cmyk.jpg").pixels.shape
    (2, 4, 3)
    """
    if not data:
        raise InvalidImage(f"image {name!r} is empty (0 bytes)")
    image = _open(data, name, max_pixels)
    try:
        image = ImageOps.exif_transpose(image)
        pixels = _to_rgb(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise InvalidImage(f"image {name!r} could not be decoded: {error}") from error
    return DecodedImage(name=name, pixels=pixels, content_hash=content_hash(data))


UNKNOWN_MEDIA_TYPE = "application/octet-stream"


def media_type(data: bytes) -> str:
    """The MIME type of encoded image bytes, from their header (`UNKNOWN_MEDIA_TYPE` when
    Pillow does not know it).

    >>> media_type(encode_png(np.zeros((2, 2, 3), dtype=np.uint8)))
    'image/png'
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return Image.MIME.get(image.format or "", UNKNOWN_MEDIA_TYPE)
    except (OSError, ValueError, SyntaxError):
        return UNKNOWN_MEDIA_TYPE


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        # We enforce our own pixel limit below, before any pixel is decoded.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            # Pillow's own, larger limit tripped before ours could look at the size.
            raise InvalidImage(f"image {name!r} is over the limit of {max_pixels:,} pixels ({error})") from error
        except (OSError, ValueError, SyntaxError) as error:
            raise InvalidImage(f"image {name!r} could not be decoded: {error}") from error
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage(f"image {name!r} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImage(
            f"image {name!r} has {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,}"
        )
    return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image.load()
    if image.mode in _WIDE_INTEGER_MODES:
        wide = np.asarray(image, dtype=np.float64)
        scale = 257.0 if wide.max(initial=0) > 255 else 1.0
        gray = np.clip(np.round(wide / scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        # Float images are either in [0, 1] or already in 8-bit units.
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """Encodes an (H, W, 3) uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
