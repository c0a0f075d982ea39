"""Controlled edits: the shapes they promise, a seed fixing them, composites whose reused
cells are exactly the ones they report, and clear errors for impossible requests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.scorer import edits
from services.scorer.crops import grid_bounds


def picture(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise: varied enough that edits change it visibly."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([255 * x / width, 255 * y / height, 127 + 100 * np.sin(x / 9.0)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("fraction", [0.8, 0.9, 0.95, 1.0])
def test_crop_keeps_the_fraction_of_each_side_from_the_original(fraction):
    image = picture()
    out = edits.crop(image, fraction, rng())
    assert out.shape == (round(120 * fraction), round(160 * fraction), 3)
    # The crop is a window of the original: find it.
    windows = [
        (top, left) for top in range(image.shape[0] - out.shape[0] + 1) for left in range(image.shape[1] - out.shape[1] + 1)
        if np.array_equal(image[top : top + out.shape[0], left : left + out.shape[1]], out)
    ]
    assert windows


def test_colour_jitter_keeps_shape_and_dtype_and_changes_colours():
    image = picture()
    out = edits.colour_jitter(image, rng(3), strength=0.3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() > 2


def test_colour_jitter_of_strength_zero_is_the_identity():
    image = picture()
    assert np.array_equal(edits.colour_jitter(image, rng(), strength=0.0), image)


@pytest.mark.parametrize("degrees", [-5.0, -1.0, 0.0, 2.5, 5.0])
def test_rotation_leaves_no_fill(degrees):
    white = np.full((90, 140, 3), 255, np.uint8)
    out = edits.rotate(white, degrees)
    assert out.shape[2] == 3 and out.shape[0] <= 90 and out.shape[1] <= 140
    # Every pixel comes from the image, none from the black fill.
    assert out.min() >= 250
    assert out.shape[0] / out.shape[1] == pytest.approx(90 / 140, abs=0.03)


def test_jpeg_is_a_lossy_round_trip_of_the_same_shape():
    image = picture()
    low, high = edits.jpeg(image, 20), edits.jpeg(image, 95)
    assert low.shape == high.shape == image.shape
    assert np.abs(low.astype(int) - image).mean() > np.abs(high.astype(int) - image).mean()


def test_shrink_only_scales_down():
    assert edits.shrink(picture(120, 160), 80).shape == (60, 80, 3)
    assert edits.shrink(picture(120, 160), 500).shape == (120, 160, 3)
    assert edits.shrink(picture(120, 160), None).shape == (120, 160, 3)


@pytest.mark.parametrize("k", [0, 1, 5, 8, 15, 16])
def test_composite_takes_exactly_the_reported_cells_from_a(k):
    a, b = picture(seed=1), picture(90, 70, seed=2)
    out, cells = edits.composite(a, b, k, rng(k))
    assert out.shape == a.shape and len(cells) == k == len(set(cells))
    from_a = [
        index for index, (top, bottom, left, right) in enumerate(grid_bounds(*a.shape[:2]))
        if np.array_equal(out[top:bottom, left:right], a[top:bottom, left:right])
    ]
    assert from_a == sorted(cells)


def test_composite_cells_follow_the_scorer_grid_on_uneven_sizes():
    a, b = picture(103, 77, seed=1), picture(50, 50, seed=2)
    out, cells = edits.composite(a, b, 16, rng())
    assert cells == tuple(range(16)) and np.array_equal(out, a)


def test_replica_applies_the_recipe_and_says_what_it_did():
    image = picture(600, 800)
    out, done = edits.replica(image, rng(5))
    recipe = edits.replica_recipe()
    assert out.ndim == 3 and out.dtype == np.uint8
    assert recipe["crop_fraction"][0] <= done["crop_fraction"] <= recipe["crop_fraction"][1]
    assert abs(done["rotation_degrees"]) <= recipe["rotation_degrees"][1]
    assert recipe["jpeg_quality"][0] <= done["jpeg_quality"] <= recipe["jpeg_quality"][1]
    assert list(out.shape[:2]) == done["size"]
    # Smaller than the crop (rotation trims it), never larger than the original.
    assert out.shape[0] <= done["crop_box"][2] and out.shape[1] <= done["crop_box"][3]
    json.dumps(done)  # recorded as provenance


def test_replica_scales_large_images_down_to_the_web_size():
    out, _ = edits.replica(picture(1500, 2100), rng())
    assert max(out.shape[:2]) <= edits.REPLICA_MAX_SIDE


@pytest.mark.parametrize("edit", [
    lambda r: edits.crop(picture(), 0.85, r),
    lambda r: edits.colour_jitter(picture(), r),
    lambda r: edits.composite(picture(seed=1), picture(seed=2), 7, r)[0],
    lambda r: edits.replica(picture(), r)[0],
])
def test_a_seed_fixes_every_random_edit(edit):
    assert np.array_equal(edit(rng(42)), edit(rng(42)))
    assert not np.array_equal(edit(rng(42)), edit(rng(43)))


@pytest.mark.parametrize("call, message", [
    (lambda: edits.crop(picture(), 0.0, rng()), r"crop fraction must lie in \(0, 1\], got 0.0"),
    (lambda: edits.crop(picture(), 1.2, rng()), r"crop fraction must lie in \(0, 1\], got 1.2"),
    (lambda: edits.colour_jitter(picture(), rng(), strength=1.5), r"jitter strength must lie in \[0, 1\), got 1.5"),
    (lambda: edits.jpeg(picture(), 0), r"JPEG quality must lie in \[1, 95\], got 0"),
    (lambda: edits.composite(picture(), picture(), 17, rng()), r"k must lie in \[0, 16\] for a 4x4 grid, got 17"),
    (lambda: edits.composite(picture(3, 3), picture(), 1, rng()), r"too small for a 4x4 grid"),
])
def test_impossible_edits_say_what_was_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
