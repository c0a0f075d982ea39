"""Controlled edits of real reference images: the labelled pairs of METHOD.md's validation.

Replicas (crops, colour jitter, small rotations, JPEG) should be recognized and reused;
composites take some grid cells from one work and the rest from another, so that the share
of reused cells is known; transformations (`flat_colour`, `palette_texture`,
`mirrored_recomposition`) keep the subject but not the pixels. Every edit works on (H, W, 3) uint8 arrays and draws its randomness
from a `numpy.random.Generator`, so a seed fixes the result.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from services.scorer.crops import GRID, grid_bounds

# The replica recipe: what a faithful copy of a work, passed around the web, looks like.
REPLICA_CROP = (0.80, 0.95)
REPLICA_ROTATION = 5.0
REPLICA_JPEG = (60, 90)
REPLICA_JITTER = 0.15
# Web copies, like generated images, are about a megapixel; it also keeps edits fast.
REPLICA_MAX_SIDE = 1024


def crop(pixels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A crop keeping `fraction` of each side, at a random position.

    >>> crop(np.zeros((100, 80, 3), np.uint8), 0.9, np.random.default_rng(0)).shape
    (90, 72, 3)
    """
    top, left, height, width = _crop_box(pixels.shape, fraction, rng)
    return pixels[top : top + height, left : left + width].copy()


def _crop_box(shape: tuple[int, ...], fraction: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"crop fraction must lie in (0, 1], got {fraction}")
    height, width = max(1, round(shape[0] * fraction)), max(1, round(shape[1] * fraction))
    top = int(rng.integers(0, shape[0] - height + 1))
    left = int(rng.integers(0, shape[1] - width + 1))
    return top, left, height, width


def colour_jitter(pixels: np.ndarray, rng: np.random.Generator, strength: float = REPLICA_JITTER) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength] and
    a hue shift of at most strength / 5 of the colour wheel.

    >>> x = np.full((8, 8, 3), 100, np.uint8)
    >>> bool((colour_jitter(x, np.random.default_rng(1)) == colour_jitter(x, np.random.default_rng(1))).all())
    True
    """
    return _apply_jitter(pixels, _jitter_factors(rng, strength))


def _jitter_factors(rng: np.random.Generator, strength: float) -> dict[str, float]:
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"jitter strength must lie in [0, 1), got {strength}")
    low, high = 1.0 - strength, 1.0 + strength
    return {
        "brightness": float(rng.uniform(low, high)),
        "contrast": float(rng.uniform(low, high)),
        "saturation": float(rng.uniform(low, high)),
        "hue_shift": float(rng.uniform(-strength, strength) / 5.0),
    }


# NTSC YIQ: Y is luma, (I, Q) the chroma plane, so a hue shift is a rotation of (I, Q) and a
# saturation change a scaling of it; the whole jitter is then one affine map per pixel.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _apply_jitter(pixels: np.ndarray, factors: dict[str, float]) -> np.ndarray:
    angle = 2.0 * math.pi * factors["hue_shift"]
    cos, sin = math.cos(angle), math.sin(angle)
    chroma = factors["saturation"] * np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    chroma[0, 0] = 1.0
    colour = _YIQ_TO_RGB @ chroma @ _RGB_TO_YIQ
    rgb = pixels.astype(np.float32) * np.float32(factors["brightness"])
    # Contrast pulls towards the mean luma, as Pillow's ImageEnhance.Contrast does.
    mean_luma = float((rgb @ _RGB_TO_YIQ[0].astype(np.float32)).mean())
    rgb = mean_luma + np.float32(factors["contrast"]) * (rgb - mean_luma)
    rgb = rgb @ colour.T.astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rotate(pixels: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates about the centre and keeps the largest centred rectangle of the original aspect
    that holds only image pixels, so that no fill shows.

    >>> rotate(np.zeros((100, 100, 3), np.uint8), 5.0).shape
    (90, 90, 3)
    """
    height, width = pixels.shape[:2]
    rotated = np.array(Image.fromarray(pixels).rotate(degrees, resample=Image.Resampling.BILINEAR))
    scale = _inscribed_scale(height, width, math.radians(abs(degrees)))
    # One pixel less each side: interpolation blends the border with the fill.
    inner_h, inner_w = max(1, math.floor(height * scale) - 2), max(1, math.floor(width * scale) - 2)
    top, left = (height - inner_h) // 2, (width - inner_w) // 2
    return rotated[top : top + inner_h, left : left + inner_w].copy()


def _inscribed_scale(height: int, width: int, angle: float) -> float:
    """The largest s such that an s*width x s*height rectangle, centred, fits inside the
    width x height one rotated by `angle`."""
    cos, sin = math.cos(angle), math.sin(angle)
    return min(width / (width * cos + height * sin), height / (width * sin + height * cos))


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """A round trip through JPEG at `quality` (1-95).

    >>> jpeg(np.zeros((16, 16, 3), np.uint8), 75).shape
    (16, 16, 3)
    """
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must lie in [1, 95], got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    return np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def composite(
    a: np.ndarray, b: np.ndarray, k: int, rng: np.random.Generator, grid: tuple[int, int] = GRID,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """`b` resized to `a`'s size, with `k` random cells of the grid taken from `a`. Cells are
    the scorer's (`grid_bounds`), so exactly those `k` crops are `a`'s. Returns the image and
    the row-major indices of the cells from `a`: the true reuse map.

    >>> a, b = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    >>> mixed, cells = composite(a, b, 3, np.random.default_rng(0), (2, 2))
    >>> len(cells), int((mixed == 0).all(axis=2).sum())
    (3, 48)
    """
    bounds = grid_bounds(a.shape[0], a.shape[1], grid)
    if not 0 <= k <= len(bounds):
        raise ValueError(f"k must lie in [0, {len(bounds)}] for a {grid[0]}x{grid[1]} grid, got {k}")
    out = resize(b, a.shape[0], a.shape[1])
    cells = tuple(sorted(int(c) for c in rng.choice(len(bounds), size=k, replace=False)))
    for cell in cells:
        top, bottom, left, right = bounds[cell]
        out[top:bottom, left:right] = a[top:bottom, left:right]
    return out, cells


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 pixels at (height, width), bicubic; a copy where the size is already that."""
    if pixels.shape[:2] == (height, width):
        return pixels.copy()
    return np.array(Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0))


def replica(pixels: np.ndarray, rng: np.random.Generator, max_side: int | None = REPLICA_MAX_SIDE) -> tuple[np.ndarray, dict[str, Any]]:
    """A faithful copy: a random crop of 80-95 % of each side, scaled down to at most
    `max_side` pixels (None: kept), colour jitter, a rotation within +-5 degrees and JPEG at
    quality 60-90. Returns the image and what was done (JSON-serialisable).

    >>> x = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    >>> edited, done = replica(x, np.random.default_rng(7))
    >>> sorted(done)
    ['crop_box', 'crop_fraction', 'jitter', 'jpeg_quality', 'rotation_degrees', 'size']
    """
    fraction = float(rng.uniform(*REPLICA_CROP))
    box = _crop_box(pixels.shape, fraction, rng)
    top, left, height, width = box
    out = shrink(pixels[top : top + height, left : left + width], max_side)
    factors = _jitter_factors(rng, REPLICA_JITTER)
    degrees = float(rng.uniform(-REPLICA_ROTATION, REPLICA_ROTATION))
    quality = int(rng.integers(REPLICA_JPEG[0], REPLICA_JPEG[1] + 1))
    out = jpeg(rotate(_apply_jitter(out, factors), degrees), quality)
    done = {
        "crop_fraction": fraction,
        "crop_box": list(box),
        "jitter": factors,
        "rotation_degrees": degrees,
        "jpeg_quality": quality,
        "size": [int(out.shape[0]), int(out.shape[1])],
    }
    return out, done


def shrink(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """Scales down (never up) so that the longer side is at most `max_side`.

    >>> shrink(np.zeros((300, 200, 3), np.uint8), 150).shape, shrink(np.zeros((30, 20, 3), np.uint8), 150).shape
    ((150, 100, 3), (30, 20, 3))
    """
    height, width = pixels.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return pixels
    scale = max_side / max(height, width)
    return resize(pixels, max(1, round(height * scale)), max(1, round(width * scale)))


def replica_recipe() -> dict[str, Any]:
    """The replica parameters, for provenance records."""
    return {
        "max_side": REPLICA_MAX_SIDE,
        "crop_fraction": list(REPLICA_CROP),
        "rotation_degrees": [-REPLICA_ROTATION, REPLICA_ROTATION],
        "jpeg_quality": list(REPLICA_JPEG),
        "jitter_strength": REPLICA_JITTER,
    }


# -- transformations: the subject kept, the pixels not ---------------------------------------------
# Sizes in pixels are for a 1000-pixel long side and scale with the image, so that a
# transformation looks the same on a thumbnail and on a full-size copy.
FLAT_COLOURS = (4, 8)
FLAT_BLUR = (3.0, 6.0)
FLAT_HUE_TURN = (0.25, 0.75)
FLAT_SATURATION = 1.3
FLAT_EDGE_SHARE = (0.06, 0.12)
FLAT_INK = (24, 20, 18)
PALETTE_STRIPE_PERIOD = (8.0, 20.0)
PALETTE_STRIPE_AMPLITUDE = (0.2, 0.35)
MIRROR_SHIFT = (0.3, 0.7)


def _scaled(pixels: np.ndarray, length: float) -> float:
    return length * max(pixels.shape[:2]) / 1000.0


def flat_colour(pixels: np.ndarray, rng: np.random.Generator, max_side: int | None = REPLICA_MAX_SIDE) -> tuple[np.ndarray, dict[str, Any]]:
    """An edge-and-flat-colour rendering, as a poster or a comic would redraw the work: blurred,
    quantised to 4-8 flat colours, recoloured (hues turned by a quarter to three quarters of
    the colour wheel, saturated; lightness kept, so light and shade stay), with dark lines
    where its lightness changes most. Returns the image and what was done.

    >>> x = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    >>> out, done = flat_colour(x, np.random.default_rng(1))
    >>> out.shape, len(np.unique(out.reshape(-1, 3), axis=0)) <= done["colours"] + 1
    ((60, 80, 3), True)
    """
    out = shrink(pixels, max_side)
    colours = int(rng.integers(FLAT_COLOURS[0], FLAT_COLOURS[1] + 1))
    blur = float(rng.uniform(*FLAT_BLUR))
    turn = float(rng.uniform(*FLAT_HUE_TURN))
    edge_share = float(rng.uniform(*FLAT_EDGE_SHARE))
    smooth = Image.fromarray(out).filter(ImageFilter.GaussianBlur(_scaled(out, blur)))
    quantised = smooth.quantize(palette=_palette(smooth, colours), dither=Image.Dither.NONE)
    palette = np.array(quantised.getpalette(), np.uint8).reshape(-1, 1, 3)
    recoloured = _apply_jitter(palette, {"brightness": 1.0, "contrast": 1.0, "saturation": FLAT_SATURATION, "hue_shift": turn})
    flat = recoloured[:, 0][np.asarray(quantised)]
    flat[_edges(np.asarray(smooth.convert("L"), np.float32), edge_share)] = FLAT_INK
    done = {"colours": colours, "blur": blur, "hue_turn": turn, "edge_share": edge_share, "size": [int(flat.shape[0]), int(flat.shape[1])]}
    return flat, done


def _palette(picture: Image.Image, colours: int) -> Image.Image:
    """A median-cut palette of `colours` colours; from a thumbnail, since median cut is slow
    on a megapixel and a palette needs few samples."""
    scale = min(1.0, 128 / max(picture.size))
    thumbnail = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    return thumbnail.quantize(colours, method=Image.Quantize.MEDIANCUT)


def _edges(luma: np.ndarray, share: float) -> np.ndarray:
    """The `share` of pixels with the steepest lightness gradient, thickened by a pixel."""
    rows, cols = np.gradient(luma)
    magnitude = np.hypot(rows, cols)
    mask = magnitude > np.quantile(magnitude, 1.0 - share)
    thick = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))
    return np.asarray(thick) > 0


def palette_texture(pixels: np.ndarray, rng: np.random.Generator, max_side: int | None = REPLICA_MAX_SIDE) -> tuple[np.ndarray, dict[str, Any]]:
    """A heavy palette and texture change: the work's lightness mapped through three random
    colours (dark to light, so light and shade stay where they were) and printed over diagonal
    stripes, as a screen print would. Returns the image and what was done.

    >>> x = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    >>> out, done = palette_texture(x, np.random.default_rng(1))
    >>> out.shape, sorted(done)
    ((60, 80, 3), ['palette', 'size', 'stripe_amplitude', 'stripe_angle', 'stripe_period'])
    """
    out = shrink(pixels, max_side)
    palette = rng.integers(0, 256, (3, 3)).astype(np.float32)
    palette = palette[np.argsort(palette @ _RGB_TO_YIQ[0].astype(np.float32))]
    angle = float(rng.uniform(0.0, math.pi))
    period = float(rng.uniform(*PALETTE_STRIPE_PERIOD))
    amplitude = float(rng.uniform(*PALETTE_STRIPE_AMPLITUDE))
    luma = np.asarray(Image.fromarray(out).convert("L"), np.float32) / 255.0
    mapped = np.stack([np.interp(luma, (0.0, 0.5, 1.0), palette[:, c]) for c in range(3)], axis=-1)
    y, x = np.mgrid[0 : out.shape[0], 0 : out.shape[1]].astype(np.float32)
    stripes = 1.0 + amplitude * np.sin(2.0 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / _scaled(out, period))
    printed = np.clip(np.rint(mapped * stripes[..., None]), 0, 255).astype(np.uint8)
    done = {"palette": palette.astype(int).tolist(), "stripe_angle": angle, "stripe_period": period,
            "stripe_amplitude": amplitude, "size": [int(out.shape[0]), int(out.shape[1])]}
    return printed, done


def mirrored_recomposition(pixels: np.ndarray, rng: np.random.Generator,
                           max_side: int | None = REPLICA_MAX_SIDE) -> tuple[np.ndarray, dict[str, Any]]:
    """The work mirrored left to right and recomposed: cut at 30-70 % of its width and the two
    parts swapped, so that what was at the centre moves to the edges. Returns the image and
    what was done.

    >>> x = np.arange(8, dtype=np.uint8).reshape(1, 8, 1).repeat(3, axis=2)
    >>> out, done = mirrored_recomposition(x, np.random.default_rng(0))
    >>> out[0, :, 0].tolist(), done["shift"]
    ([3, 2, 1, 0, 7, 6, 5, 4], 4)
    """
    out = shrink(pixels, max_side)
    shift = round(float(rng.uniform(*MIRROR_SHIFT)) * out.shape[1])
    recomposed = np.roll(out[:, ::-1], shift, axis=1).copy()
    return recomposed, {"shift": int(shift), "size": [int(out.shape[0]), int(out.shape[1])]}


TRANSFORMATIONS = {"flat_colour": flat_colour, "palette_texture": palette_texture,
                   "mirrored_recomposition": mirrored_recomposition}


def transformation(pixels: np.ndarray, rng: np.random.Generator, max_side: int | None = REPLICA_MAX_SIDE) -> tuple[np.ndarray, dict[str, Any]]:
    """One of `TRANSFORMATIONS`, drawn from `rng`. Returns the image and what was done, its
    name under "transformation".

    >>> x = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    >>> _, done = transformation(x, np.random.default_rng(2))
    >>> done["transformation"] in TRANSFORMATIONS
    True
    """
    name = list(TRANSFORMATIONS)[int(rng.integers(len(TRANSFORMATIONS)))]
    out, done = TRANSFORMATIONS[name](pixels, rng, max_side)
    return out, {"transformation": name, **done}


def transformation_recipe() -> dict[str, Any]:
    """The transformation parameters, for provenance records."""
    return {
        "max_side": REPLICA_MAX_SIDE,
        "kinds": list(TRANSFORMATIONS),
        "flat_colour": {"colours": list(FLAT_COLOURS), "blur_per_1000px": list(FLAT_BLUR), "hue_turn": list(FLAT_HUE_TURN),
                        "saturation": FLAT_SATURATION,
                        "edge_share": list(FLAT_EDGE_SHARE), "ink": list(FLAT_INK)},
        "palette_texture": {"stripe_period_per_1000px": list(PALETTE_STRIPE_PERIOD),
                            "stripe_amplitude": list(PALETTE_STRIPE_AMPLITUDE)},
        "mirrored_recomposition": {"shift": list(MIRROR_SHIFT)},
    }
