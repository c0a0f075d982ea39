"""Untrusted image bytes: every mode converted, every bad file refused with a clear message."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from services.common.images import InvalidImage, decode_image


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries (almost) no pixels: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "image, fmt, expected",
    [
        (Image.new("RGB", (5, 3), (10, 20, 30)), "PNG", (10, 20, 30)),
        (Image.new("L", (5, 3), 77), "PNG", (77, 77, 77)),
        (Image.new("1", (5, 3), 1), "PNG", (255, 255, 255)),
        (Image.new("CMYK", (5, 3), (0, 0, 0, 0)), "JPEG", (255, 255, 255)),
        (Image.new("CMYK", (5, 3), (0, 0, 0, 0)), "TIFF", (255, 255, 255)),
        (Image.new("RGBA", (5, 3), (255, 0, 0, 0)), "PNG", (255, 255, 255)),  # transparent over white
        (Image.new("RGBA", (5, 3), (255, 0, 0, 255)), "PNG", (255, 0, 0)),
        (Image.new("LA", (5, 3), (0, 0)), "PNG", (255, 255, 255)),
        (Image.new("I;16", (5, 3), 65535), "PNG", (255, 255, 255)),
        (Image.new("I;16", (5, 3), 32896), "PNG", (128, 128, 128)),
        (Image.new("RGB", (5, 3), (10, 20, 30)), "WEBP", None),
    ],
    ids=["rgb", "gray", "bilevel", "cmyk-jpeg", "cmyk-tiff", "rgba-clear", "rgba-opaque", "la", "16bit-white", "16bit-mid", "webp"],
)
def test_modes_are_converted_to_rgb(image, fmt, expected):
    params = {"lossless": True} if fmt == "WEBP" else {}
    decoded = decode_image(encode(image, fmt, **params), f"x.{fmt.lower()}")
    assert decoded.pixels.shape == (3, 5, 3) and decoded.pixels.dtype == np.uint8
    if expected is not None:
        assert decoded.pixels[1, 2].tolist() == list(expected)


def test_palette_with_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([200, 10, 10] + [0, 0, 0] * 255)
    decoded = decode_image(encode(image, "PNG", transparency=0), "p.png")
    assert decoded.pixels[0, 0].tolist() == [255, 255, 255]
    decoded = decode_image(encode(image, "PNG"), "p.png")
    assert decoded.pixels[0, 0].tolist() == [200, 10, 10]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (6, 2), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(encode(image, "JPEG", exif=exif), "rotated.jpg")
    assert decoded.pixels.shape[:2] == (6, 2)


def test_content_hash_identifies_bytes():
    a = encode(Image.new("RGB", (4, 4), (1, 2, 3)))
    b = encode(Image.new("RGB", (4, 4), (1, 2, 4)))
    assert decode_image(a).content_hash == decode_image(a).content_hash != decode_image(b).content_hash


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", r"image 'bad' is empty \(0 bytes\)"),
        (b"not an image at all", r"image 'bad' could not be decoded"),
        (encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:200], r"image 'bad' could not be decoded"),
        (png_header_only(2_000, 1_000), r"image 'bad' has 2000x1000 = 2,000,000 pixels, over the limit of 1,000"),
        (png_header_only(100_000, 100_000), r"image 'bad' is over the limit of 1,000 pixels \(Image size \(10000000000 pixels\)"),
    ],
    ids=["empty", "garbage", "truncated", "over-limit", "bomb"],
)
def test_bad_bytes_are_refused_with_a_clear_message(data, message):
    with pytest.raises(InvalidImage, match=message):
        decode_image(data, "bad", max_pixels=1_000)


def test_pixel_limit_is_inclusive():
    data = encode(Image.new("RGB", (10, 10)))
    assert decode_image(data, max_pixels=100).pixels.shape == (10, 10, 3)
    with pytest.raises(InvalidImage, match="over the limit of 99"):
        decode_image(data, max_pixels=99)
