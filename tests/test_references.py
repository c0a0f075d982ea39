"""Reference preparation: pHash, de-duplication, static and dynamic pools, catalogs."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image
from shared_data import references_root

from services.common.images import decode_image
from services.scorer.references import (
    Imagery,
    Reference,
    deduplicate,
    find_catalog_entry,
    hamming,
    image_files,
    load_catalog,
    phash,
)


def decoded(pixels: np.ndarray, name: str):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return decode_image(buffer.getvalue(), name)


def independent_phash(pixels: np.ndarray) -> int:
    """The imagehash package's pHash, as an integer with the same bit order."""
    bits = imagehash.phash(Image.fromarray(pixels)).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def test_phash_matches_imagehash_on_real_images():
    root = references_root()
    files = [p for entry in load_catalog(root)[:12] for p in image_files(entry.folder)]
    for path in files:
        pixels = decode_image(path.read_bytes(), path.name).pixels
        assert phash(pixels) == independent_phash(pixels), path


@pytest.mark.parametrize("seed", range(5))
def test_phash_matches_imagehash_on_noise(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    assert phash(pixels) == independent_phash(pixels)


def test_hamming():
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64


def gradient(angle: float, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    values = (np.cos(angle) * x + np.sin(angle) * y + 1) * 100
    return np.repeat(values[..., None], 3, axis=2).astype(np.uint8)


def test_deduplicate_keeps_first_and_drops_near_duplicates():
    base = gradient(0.0)
    near = np.clip(base.astype(int) + 3, 0, 255).astype(np.uint8)  # a brightness shift: same pHash
    other = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    images = [decoded(base, "a"), decoded(near, "b"), decoded(other, "c"), decoded(base, "d")]
    assert hamming(phash(base), phash(near)) <= 18 < hamming(phash(base), phash(other))
    assert [i.name for i in deduplicate(images)] == ["a", "c"]


def test_threshold_is_inclusive_at_18():
    images = [decoded(gradient(0.0), "a"), decoded(gradient(2.0), "b")]
    distance = hamming(phash(images[0].pixels), phash(images[1].pixels))
    assert [i.name for i in deduplicate(images, max_distance=distance)] == ["a"]
    assert [i.name for i in deduplicate(images, max_distance=distance - 1)] == ["a", "b"]


def test_static_pool_is_canonical_image_and_dynamic_pool_is_deduplicated():
    images = (decoded(gradient(0.0), "1.png"), decoded(gradient(0.0), "2.png"), decoded(gradient(2.5), "3.png"))
    reference = Reference("work", images, Imagery.DYNAMIC)
    assert [i.name for i in reference.pool(Imagery.STATIC)] == ["1.png"]
    assert [i.name for i in reference.pool()] == ["1.png", "3.png"]


def test_reference_needs_images():
    with pytest.raises(ValueError, match="has no images"):
        Reference("empty", ())


def test_image_files_natural_order(tmp_path):
    for name in ["10.png", "2.png", "1.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in image_files(tmp_path)] == ["1.png", "2.png", "10.png"]


def test_catalog_of_shared_data():
    root = references_root()
    entries = load_catalog(root)
    assert len(entries) == 30
    starry = find_catalog_entry(entries, "Q45585")
    assert starry.slug == "the_starry_night" and starry.imagery is Imagery.STATIC
    assert find_catalog_entry(entries, "nosferatu").imagery is Imagery.DYNAMIC
    reference = starry.load()
    assert reference.images[0].name == "1.jpg" and len(reference.images) == 5
    with pytest.raises(KeyError, match="no reference 'Q0'"):
        find_catalog_entry(entries, "Q0")


def test_catalog_without_catalog_file(tmp_path):
    (tmp_path / "some_work").mkdir()
    (tmp_path / "some_work" / "1.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    assert [e.slug for e in load_catalog(tmp_path)] == ["some_work"]
