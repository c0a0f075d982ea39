"""Reference images: perceptual hashing and the static / dynamic pools of METHOD.md."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image
from scipy.fft import dct

from services.common.images import DecodedImage

# METHOD.md: an image within Hamming distance 18 of an already kept one is a near-duplicate.
DUPLICATE_HAMMING_DISTANCE = 18


class Imagery(str, Enum):
    STATIC = "static"
    DYNAMIC = "dynamic"


def phash(pixels: np.ndarray) -> int:
    """The 64-bit perceptual hash: the sign of the 8x8 lowest DCT frequencies of a 32x32
    grayscale thumbnail against their median (the common pHash, as in the imagehash package).

    >>> phash(np.zeros((40, 40, 3), dtype=np.uint8)) == phash(np.zeros((80, 80, 3), dtype=np.uint8))
    True
    """
    gray = Image.fromarray(pixels).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    frequencies = dct(dct(np.asarray(gray, dtype=np.float64), axis=0, norm=None), axis=1, norm=None)
    low = frequencies[:8, :8]
    bits = (low > np.median(low)).flatten()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return bin(a ^ b).count("1")


def deduplicate(images: list[DecodedImage], max_distance: int = DUPLICATE_HAMMING_DISTANCE) -> list[DecodedImage]:
    """Keeps images in order, dropping any within `max_distance` bits of one already kept."""
    kept: list[DecodedImage] = []
    kept_hashes: list[int] = []
    for image in images:
        image_hash = phash(image.pixels)
        if all(hamming(image_hash, other) > max_distance for other in kept_hashes):
            kept.append(image)
            kept_hashes.append(image_hash)
    return kept


@dataclass(frozen=True)
class Reference:
    """A cultural reference's images, canonical first."""

    reference_id: str
    images: tuple[DecodedImage, ...]
    imagery: Imagery = Imagery.STATIC

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError(f"reference {self.reference_id!r} has no images")

    def pool(self, imagery: Imagery | None = None) -> list[DecodedImage]:
        """The reference images scored against: the canonical one (static) or all
        de-duplicated ones (dynamic)."""
        imagery = imagery or self.imagery
        if imagery is Imagery.STATIC:
            return [self.images[0]]
        return deduplicate(list(self.images))
