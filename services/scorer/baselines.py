"""Plain image-image similarities: the baselines that CRA, VR and CRT are validated against
(METHOD.md, "Validation against plain similarity").

- `global_cosine`: the cosine of two whole images' embeddings by one encoder (CLIP for the
  "global CLIP cosine" baseline, DINO for "global DINO cosine"; any `Encoder` works);
- `phash_distance`: the Hamming distance of the two 64-bit perceptual hashes that reference
  de-duplication uses (`services.scorer.references.phash`);
- `ssim`: the structural similarity of Wang et al. (2004) with kornia, on both images resized
  to a common square size: Gaussian window of 11 taps with sigma 1.5, C1 = (0.01 L)^2,
  C2 = (0.03 L)^2 with L = 1, "valid" windows only (no padding, as in the authors' MATLAB
  code), the mean of the SSIM map over pixels (and channels for RGB).

Each takes images as `DecodedImage` or (H, W, 3) uint8 arrays. The plural variants score
pairs (`images_a[i]` with `images_b[i]`) in batches and embed, hash or resize an image that
occurs in several pairs (a reference, typically) only once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import kornia
import numpy as np
import torch
from PIL import Image

from services.common.images import DecodedImage, InvalidImage
from services.scorer.encoders import Encoder, embed
from services.scorer.references import hamming, phash

ImageInput = DecodedImage | np.ndarray

# Wang et al. (2004): an 11-tap Gaussian window with sigma 1.5 (kornia's fixed sigma), and
# the constants K1 = 0.01, K2 = 0.03 for a data range of 1.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_SIZE = 256
# Pairs per kornia call in `ssims`.
SSIM_BATCH = 32


# -- input checks -----------------------------------------------------------------------------
def _pixels(image: ImageInput, what: str = "image") -> np.ndarray:
    """The (H, W, 3) uint8 pixels of `image`, or an error that says what was wrong."""
    if isinstance(image, DecodedImage):
        image = image.pixels
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a DecodedImage or an (H, W, 3) uint8 array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidImage(f"{what} must be an (H, W, 3) uint8 array, got shape {image.shape} and dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidImage(f"{what} has no pixels: shape {image.shape}")
    return image


def _pairs(images_a: Sequence[ImageInput], images_b: Sequence[ImageInput]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(images_a) != len(images_b):
        raise ValueError(f"images_a and images_b must pair up, got {len(images_a)} and {len(images_b)} images")
    return ([_pixels(a, f"images_a[{i}]") for i, a in enumerate(images_a)],
            [_pixels(b, f"images_b[{i}]") for i, b in enumerate(images_b)])


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < SSIM_WINDOW:
        raise ValueError(f"size must be an int of at least {SSIM_WINDOW} (the SSIM window), got {size!r}")
    return int(size)


PIXELS_PREFIX = "pixels:"


def pixels_key(pixels: np.ndarray) -> str:
    """A content key of in-memory pixels: the sha256 of their bytes and shape, hashed from the
    array's memory without copying it."""
    digest = hashlib.sha256(np.ascontiguousarray(pixels))
    digest.update(str(pixels.shape).encode())
    return PIXELS_PREFIX + digest.hexdigest()


def _unique(images: Sequence[ImageInput], pixels: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct images (by content) and, for each input, the index of its distinct one.
    A `DecodedImage` is known by its own content hash; an array by `pixels_key`, computed once
    per array object (a reference paired with many images is hashed once, not per pair)."""
    hashed: dict[int, str] = {}
    index: dict[str, int] = {}
    distinct: list[np.ndarray] = []
    where = np.empty(len(pixels), dtype=np.int64)
    for i, (image, p) in enumerate(zip(images, pixels)):
        if isinstance(image, DecodedImage) and image.content_hash:
            key = image.content_hash
        else:
            key = hashed.get(id(p)) or hashed.setdefault(id(p), pixels_key(p))
        if key not in index:
            index[key] = len(distinct)
            distinct.append(p)
        where[i] = index[key]
    return distinct, where


# -- global cosine ----------------------------------------------------------------------------
def _tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) uint8 tensor (a view where the array allows it)."""
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    return torch.from_numpy(pixels).permute(2, 0, 1)


def embed_pixels(encoder: Encoder, pixels: Sequence[np.ndarray]) -> np.ndarray:
    """The encoder's global embedding of each (H, W, 3) uint8 image, in its batches."""
    return embed(encoder, [_tensor(p) for p in pixels])


def global_cosines(encoder: Encoder, images_a: Sequence[ImageInput], images_b: Sequence[ImageInput]) -> np.ndarray:
    """cos(f(a_i), f(b_i)) for each pair, with f = `encoder` on the whole image; (n,) float64.
    Each distinct image is embedded once, in the encoder's batches."""
    a, b = _pairs(images_a, images_b)
    if not a:
        return np.zeros(0)
    distinct, where = _unique([*images_a, *images_b], a + b)
    rows = embed_pixels(encoder, distinct).astype(np.float64)
    cosines = np.einsum("nd,nd->n", rows[where[: len(a)]], rows[where[len(a) :]])
    return np.clip(cosines, -1.0, 1.0)


def global_cosine(encoder: Encoder, image_a: ImageInput, image_b: ImageInput) -> float:
    """The cosine of the two images' embeddings by `encoder` (L2-normalised, so a dot product).

    >>> from services.scorer.encoders import load_encoder
    >>> encoder = load_encoder("tiny-dinov2")
    >>> image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    >>> round(global_cosine(encoder, image, image), 6)
    1.0
    """
    return float(global_cosines(encoder, [image_a], [image_b])[0])


# -- pHash ------------------------------------------------------------------------------------
def phash_distances(images_a: Sequence[ImageInput], images_b: Sequence[ImageInput]) -> np.ndarray:
    """Hamming distances (0..64) of the pairs' 64-bit pHashes; (n,) int64. Each distinct
    image is hashed once."""
    a, b = _pairs(images_a, images_b)
    distinct, where = _unique([*images_a, *images_b], a + b)
    hashes = [phash(p) for p in distinct]
    return np.array([hamming(hashes[i], hashes[j]) for i, j in zip(where[: len(a)], where[len(a) :])], dtype=np.int64)


def phash_distance(image_a: ImageInput, image_b: ImageInput) -> int:
    """The Hamming distance of the two images' pHashes: 0 for the same image, at most 18 for
    what reference de-duplication calls a near-duplicate, 64 at most.

    >>> image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    >>> phash_distance(image, image), phash_distance(image, 255 - image) > 18
    (0, True)
    """
    return int(phash_distances([image_a], [image_b])[0])


# -- SSIM -------------------------------------------------------------------------------------
def ssim_input(image: ImageInput, size: int = SSIM_SIZE, grayscale: bool = True) -> np.ndarray:
    """What SSIM compares: the image as luma (PIL's ITU-R 601-2 "L") or RGB, resized to
    size x size with PIL's bicubic filter (skipped when already that size), in [0, 1];
    (C, size, size) float32 with C = 1 or 3."""
    pixels = _pixels(image)
    size = _check_size(size)
    picture = Image.fromarray(pixels)
    if grayscale:
        picture = picture.convert("L")
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return array[None] if grayscale else np.ascontiguousarray(array.transpose(2, 0, 1))


def ssim_batch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, C, H, W) pairs in [0, 1] -> (B,) mean SSIM."""
    ssim_map = kornia.metrics.ssim(torch.from_numpy(a), torch.from_numpy(b), SSIM_WINDOW, max_val=1.0, eps=0.0, padding="valid")
    return ssim_map.double().mean(dim=(1, 2, 3)).numpy()


def ssims(images_a: Sequence[ImageInput], images_b: Sequence[ImageInput], size: int = SSIM_SIZE,
          grayscale: bool = True) -> np.ndarray:
    """SSIM of each pair on `ssim_input`s of the given size; (n,) float64 in [-1, 1]. Each
    distinct image is resized once."""
    a, b = _pairs(images_a, images_b)
    size = _check_size(size)
    distinct, where = _unique([*images_a, *images_b], a + b)
    inputs = [ssim_input(p, size, grayscale) for p in distinct]
    first, second = where[: len(a)], where[len(a) :]
    out = []
    for start in range(0, len(a), SSIM_BATCH):
        chunk = slice(start, start + SSIM_BATCH)
        out.append(ssim_batch(np.stack([inputs[i] for i in first[chunk]]), np.stack([inputs[i] for i in second[chunk]])))
    return np.concatenate(out) if out else np.zeros(0)


def ssim(image_a: ImageInput, image_b: ImageInput, size: int = SSIM_SIZE, grayscale: bool = True) -> float:
    """The structural similarity of the two images, both resized to size x size: 1 for the
    same image, near 0 for unrelated ones, negative for anti-correlated structure.

    >>> image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    >>> round(ssim(image, image, size=32), 6)
    1.0
    >>> ssim(image, 255 - image, size=32) < 0
    True
    """
    return float(ssims([image_a], [image_b], size, grayscale)[0])
