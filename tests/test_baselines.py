"""The plain-similarity baselines against independent reference computations: SSIM against
Wang et al.'s formula in numpy/scipy, pHash against the imagehash package, cosine against
numpy."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
import pytest
import scipy.signal
import torch
from PIL import Image

from services.common.images import DecodedImage, InvalidImage, decode_image, encode_png
from services.scorer.baselines import (
    SSIM_SIGMA,
    SSIM_WINDOW,
    global_cosine,
    global_cosines,
    phash_distance,
    phash_distances,
    ssim,
    ssim_input,
    ssims,
)
from services.scorer.encoders import Encoder, load_encoder
from services.scorer.references import phash

REFERENCES = Path(__file__).resolve().parents[2] / "shared" / "data" / "references"
# Small real images (one of them grayscale on disk), so that decoding stays cheap.
REAL_FILES = (
    "the_starry_night/1.jpg", "the_starry_night/3.jpg", "the_starry_night/5.jpg", "the_night_cafe/1.jpg",
    "girl_with_a_pearl_earring/4.jpg", "udnie/2.jpg", "the_arrival_of_a_train_at_la_ciotat/1.jpg",
)


# -- images -------------------------------------------------------------------------------------
def structured(seed: int, height: int = 60, width: int = 80) -> np.ndarray:
    """A smooth random image with some texture: real-looking structure, not white noise."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 12, (height, width, 3))
    return np.clip(np.asarray(low, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def edited(pixels: np.ndarray, seed: int) -> np.ndarray:
    """A replica-like edit: brightness shift and mild noise."""
    rng = np.random.default_rng(seed)
    return np.clip(pixels.astype(np.float64) * 0.9 + 15 + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)


SYNTHETIC = {
    "structured": structured(0),
    "other": structured(1),
    "edited": edited(structured(0), 2),
    "noise": np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8),
    "flat": np.full((60, 80, 3), 120, dtype=np.uint8),
    "tall": structured(4, 90, 40),
}
PAIRS = [("structured", "other"), ("structured", "edited"), ("structured", "noise"), ("noise", "flat"),
         ("structured", "tall"), ("other", "structured")]


@pytest.fixture(scope="module")
def real_images() -> dict[str, np.ndarray]:
    if not REFERENCES.is_dir():
        pytest.skip(f"shared reference images absent ({REFERENCES})")
    return {name: decode_image((REFERENCES / name).read_bytes(), name).pixels for name in REAL_FILES}


# -- SSIM: Wang et al. (2004) in numpy/scipy ------------------------------------------------------
def wang_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two (C, H, W) arrays in [0, 1]: Gaussian window (11 taps, sigma 1.5,
    normalised), "valid" filtering, K1 = 0.01, K2 = 0.03, L = 1, mean over channels and pixels."""
    r = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
    g = np.exp(-(r**2) / (2 * SSIM_SIGMA**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    maps = []
    for cx, cy in zip(x.astype(np.float64), y.astype(np.float64)):
        def blur(z: np.ndarray) -> np.ndarray:
            return scipy.signal.correlate2d(z, window, mode="valid")

        mx, my = blur(cx), blur(cy)
        sxx, syy, sxy = blur(cx * cx) - mx**2, blur(cy * cy) - my**2, blur(cx * cy) - mx * my
        maps.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
    return float(np.mean(maps))


def pil_prepared(pixels: np.ndarray, size: int, grayscale: bool) -> np.ndarray:
    """The documented SSIM input, built here with PIL and numpy."""
    picture = Image.fromarray(pixels)
    if grayscale:
        picture = picture.convert("L")
    picture = picture.resize((size, size), Image.Resampling.BICUBIC) if picture.size != (size, size) else picture
    array = np.asarray(picture, dtype=np.float64) / 255.0
    return array[None] if grayscale else array.transpose(2, 0, 1)


@pytest.mark.parametrize("grayscale", [True, False], ids=["gray", "rgb"])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_ssim_matches_wang_formula(pair, size, grayscale):
    a, b = (SYNTHETIC[name] for name in pair)
    expected = wang_ssim(pil_prepared(a, size, grayscale), pil_prepared(b, size, grayscale))
    assert ssim(a, b, size=size, grayscale=grayscale) == pytest.approx(expected, abs=1e-5)


def test_ssim_input_is_the_documented_preparation():
    for grayscale in (True, False):
        np.testing.assert_allclose(ssim_input(SYNTHETIC["tall"], 48, grayscale), pil_prepared(SYNTHETIC["tall"], 48, grayscale), atol=1e-7)


def test_ssim_on_real_images_matches_wang_formula(real_images):
    a, b = real_images["the_starry_night/1.jpg"], real_images["the_starry_night/3.jpg"]
    c = real_images["the_night_cafe/1.jpg"]
    for x, y in ((a, b), (a, c)):
        expected = wang_ssim(pil_prepared(x, 128, True), pil_prepared(y, 128, True))
        assert ssim(x, y, size=128) == pytest.approx(expected, abs=1e-5)
    # A copy of the same work is more similar in structure than another work.
    assert ssim(a, b, size=128) > ssim(a, c, size=128)


def test_ssim_identical_images_is_one_and_symmetric():
    for name in ("structured", "noise", "flat"):
        assert ssim(SYNTHETIC[name], SYNTHETIC[name], size=32) == pytest.approx(1.0, abs=1e-6)
        assert ssim(SYNTHETIC[name], SYNTHETIC[name], size=32, grayscale=False) == pytest.approx(1.0, abs=1e-6)
    a, b = SYNTHETIC["structured"], SYNTHETIC["other"]
    assert ssim(a, b, size=32) == pytest.approx(ssim(b, a, size=32), abs=1e-7)


def test_ssims_batch_equals_single_pairs():
    a = [SYNTHETIC[p[0]] for p in PAIRS]
    b = [SYNTHETIC[p[1]] for p in PAIRS]
    batch = ssims(a, b, size=32, grayscale=False)
    assert batch.shape == (len(PAIRS),)
    np.testing.assert_allclose(batch, [ssim(x, y, size=32, grayscale=False) for x, y in zip(a, b)], atol=1e-6)
    assert ssims([], [], size=32).shape == (0,)


# -- pHash: the imagehash package ----------------------------------------------------------------
def imagehash_distance(a: np.ndarray, b: np.ndarray) -> int:
    return imagehash.phash(Image.fromarray(a)) - imagehash.phash(Image.fromarray(b))


@pytest.mark.parametrize("pair", PAIRS + [("flat", "structured"), ("edited", "other")], ids=lambda p: "-".join(p))
def test_phash_distance_matches_imagehash(pair):
    a, b = (SYNTHETIC[name] for name in pair)
    assert phash_distance(a, b) == imagehash_distance(a, b)


def test_phash_matches_imagehash_on_real_images(real_images):
    names = list(real_images)
    theirs = {name: imagehash.phash(Image.fromarray(real_images[name])) for name in names}
    for name in names:
        # The same 64 bits, in the same order (imagehash prints them as hex, row-major).
        assert phash(real_images[name]) == int(str(theirs[name]), 16), name
    a = [real_images[x] for x in names for _ in names]
    b = [real_images[y] for _ in names for y in names]
    expected = [theirs[x] - theirs[y] for x in names for y in names]
    np.testing.assert_array_equal(phash_distances(a, b), expected)
    # Two scans of The Starry Night are near-duplicates in de-duplication's sense.
    assert phash_distance(real_images["the_starry_night/1.jpg"], real_images["the_starry_night/3.jpg"]) <= 18


def test_phash_distance_of_identical_and_inverted_images():
    image = SYNTHETIC["structured"]
    assert phash_distance(image, image.copy()) == 0
    # Inverting negates every DCT coefficient but the DC, which only moves the median.
    assert phash_distance(image, 255 - image) >= 60


def test_phash_distances_hash_each_distinct_image_once(monkeypatch):
    from services.scorer import baselines

    calls = []
    monkeypatch.setattr(baselines, "phash", lambda pixels: calls.append(1) or phash(pixels))
    reference = SYNTHETIC["structured"]
    images = [SYNTHETIC["other"], SYNTHETIC["edited"], SYNTHETIC["other"].copy()]
    distances = phash_distances([reference] * 3, images)
    assert list(distances) == [imagehash_distance(reference, x) for x in images]
    assert len(calls) == 3  # the reference and two distinct images


# -- global cosine: numpy -------------------------------------------------------------------------
class MeanColour(Encoder):
    """A fake encoder whose embedding is known: per-channel mean and standard deviation."""

    name = "mean-colour"
    batch_size = 2

    def __init__(self) -> None:
        self.images_embedded = 0

    @property
    def identity(self) -> str:
        return "mean-colour:v1"

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        x = image.double()
        return torch.cat([x.mean(dim=(1, 2)), x.std(dim=(1, 2))])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.images_embedded += len(batch)
        return batch


def mean_colour_features(pixels: np.ndarray) -> np.ndarray:
    x = pixels.reshape(-1, 3).astype(np.float64)
    return np.concatenate([x.mean(axis=0), x.std(axis=0, ddof=1)])


def numpy_cosine(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: "-".join(p))
def test_global_cosine_matches_numpy_with_known_features(pair):
    a, b = (SYNTHETIC[name] for name in pair)
    expected = numpy_cosine(mean_colour_features(a), mean_colour_features(b))
    assert global_cosine(MeanColour(), a, b) == pytest.approx(expected, abs=1e-6)


@pytest.fixture(scope="module", params=["tiny-clip", "tiny-dinov2"])
def transformer_encoder(request) -> Encoder:
    return load_encoder(request.param, random_init=True, dtype="float32")


def test_global_cosine_matches_numpy_with_clip_and_dino(transformer_encoder):
    a, b = SYNTHETIC["structured"], SYNTHETIC["tall"]
    batch = torch.stack([transformer_encoder.preprocess(torch.from_numpy(p).permute(2, 0, 1)) for p in (a, b)])
    with torch.inference_mode():
        features = transformer_encoder.forward(batch).double().numpy()
    expected = numpy_cosine(features[0], features[1])
    assert global_cosine(transformer_encoder, a, b) == pytest.approx(expected, abs=1e-5)
    assert global_cosine(transformer_encoder, a, a) == pytest.approx(1.0, abs=1e-6)


def test_global_cosines_embed_each_distinct_image_once():
    encoder = MeanColour()
    reference = SYNTHETIC["structured"]
    images = [SYNTHETIC["other"], SYNTHETIC["noise"], SYNTHETIC["other"].copy(), reference]
    cosines = global_cosines(encoder, [reference] * 4, images)
    expected = [numpy_cosine(mean_colour_features(reference), mean_colour_features(x)) for x in images]
    np.testing.assert_allclose(cosines, expected, atol=1e-6)
    assert cosines[3] == pytest.approx(1.0, abs=1e-9)
    assert encoder.images_embedded == 3
    assert global_cosines(encoder, [], []).shape == (0,)


def test_decoded_images_and_arrays_give_the_same_results():
    a, b = SYNTHETIC["structured"], SYNTHETIC["edited"]
    da, db = (decode_image(encode_png(p), n) for p, n in ((a, "a.png"), (b, "b.png")))
    assert isinstance(da, DecodedImage)
    assert ssim(da, db, size=32) == ssim(a, b, size=32)
    assert phash_distance(da, db) == phash_distance(a, b)
    assert global_cosine(MeanColour(), da, db) == global_cosine(MeanColour(), a, b)


def test_read_only_arrays_are_accepted():
    a = SYNTHETIC["structured"].copy()
    a.flags.writeable = False
    assert global_cosine(MeanColour(), a, a) == pytest.approx(1.0, abs=1e-9)


# -- invalid input --------------------------------------------------------------------------------
GOOD = SYNTHETIC["structured"]
INVALID = [
    (lambda: ssim(np.zeros((8, 8), dtype=np.uint8), GOOD), InvalidImage, r"\(H, W, 3\) uint8 array, got shape \(8, 8\)"),
    (lambda: ssim(GOOD, GOOD.astype(np.float32)), InvalidImage, r"got shape \(60, 80, 3\) and dtype float32"),
    (lambda: phash_distance(np.zeros((4, 4, 4), dtype=np.uint8), GOOD), InvalidImage, r"got shape \(4, 4, 4\)"),
    (lambda: phash_distance(np.zeros((0, 5, 3), dtype=np.uint8), GOOD), InvalidImage, r"no pixels: shape \(0, 5, 3\)"),
    (lambda: global_cosine(MeanColour(), GOOD.tolist(), GOOD), TypeError, r"DecodedImage or an \(H, W, 3\) uint8 array, got list"),
    (lambda: ssim(GOOD, GOOD, size=8), ValueError, r"size must be an int of at least 11 \(the SSIM window\), got 8"),
    (lambda: ssim(GOOD, GOOD, size=32.0), ValueError, r"size must be an int .* got 32.0"),
    (lambda: ssims([GOOD, GOOD], [GOOD]), ValueError, r"must pair up, got 2 and 1 images"),
    (lambda: global_cosines(MeanColour(), [GOOD], []), ValueError, r"must pair up, got 1 and 0 images"),
    (lambda: phash_distances([GOOD, "x"], [GOOD, GOOD]), TypeError, r"images_a\[1\] must be .* got str"),
]


@pytest.mark.parametrize("call, error, message", INVALID, ids=[m for _, _, m in INVALID])
def test_invalid_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_each_distinct_image_is_keyed_and_resized_once(monkeypatch):
    """A reference paired with many images is hashed once (the same array object), a decoded
    image is known by its own content hash, and SSIM resizes each distinct image once."""
    from services.scorer import baselines

    keyed, resized = [], []
    pixels_key, ssim_input = baselines.pixels_key, baselines.ssim_input
    monkeypatch.setattr(baselines, "pixels_key", lambda p: keyed.append(1) or pixels_key(p))
    monkeypatch.setattr(baselines, "ssim_input", lambda *a: resized.append(1) or ssim_input(*a))
    reference = SYNTHETIC["structured"]
    decoded = decode_image(encode_png(SYNTHETIC["edited"]), "edited.png")
    images = [SYNTHETIC["other"], decoded, SYNTHETIC["other"].copy(), decoded]
    values = baselines.ssims([reference] * 4, images, size=32)
    assert len(keyed) == 3  # the reference once, the two arrays of "other"; the decoded image not at all
    assert len(resized) == 3  # reference, other, edited
    np.testing.assert_allclose(values, [ssim(reference, x, size=32) for x in images], atol=1e-6)
