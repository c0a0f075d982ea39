"""The formulas of METHOD.md against an independent computation: plain loops over fixed
embeddings, written from the text, not from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.scorer import aggregation, realization, recognition
from services.scorer.aggregation import CrtVariant


def unit_rows(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def reference_scores(images, refs, crops, ref_crops, tau, tau_reuse):
    """METHOD.md, line by line, with loops."""
    out = []
    for i in range(len(images)):
        s_i = max(cosine(images[i], refs[j]) for j in range(len(refs)))
        m = [max(cosine(crops[i][k], rc) for rc in ref_crops) for k in range(len(crops[i]))]
        r = [1 if m_ik > tau_reuse else 0 for m_ik in m]
        vr = sum(r) / len(r)
        out.append({"s": s_i, "recognized": s_i > tau, "m": m, "r": r, "vr": vr, "vi": 1 - vr})
    n = len(out)
    cra = sum(o["recognized"] for o in out) / n
    recognized_vi = [o["vi"] for o in out if o["recognized"]]
    crt_recognized = cra * (sum(recognized_vi) / len(recognized_vi)) if recognized_vi else 0.0
    crt_all = cra * sum(o["vi"] for o in out) / n
    return out, cra, crt_recognized, crt_all



def make_case(seed: int, n: int, m: int, k: int = 16, d: int = 8):
    rng = np.random.default_rng(seed)
    refs = unit_rows(rng, m, d)
    ref_crops = unit_rows(rng, m * k, d)
    # Generated images near the first reference (some close, some far) so every branch occurs.
    noise = rng.uniform(0.2, 2.0, size=(n, 1))
    images = refs[0] + noise * rng.standard_normal((n, d))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    crops = ref_crops[rng.integers(0, m * k, size=(n, k))] + rng.uniform(0.2, 1.5) * rng.standard_normal((n, k, d))
    crops /= np.linalg.norm(crops, axis=2, keepdims=True)
    return images, refs, crops, ref_crops


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_references", [1, 5], ids=["static", "dynamic"])
def test_formulas_match_reference_computation(seed, n_references):
    images, refs, crops, ref_crops = make_case(seed, n=12, m=n_references)
    tau = recognition.TAU_STATIC if n_references == 1 else recognition.TAU_DYNAMIC
    expected, cra, crt_recognized, crt_all = reference_scores(images, refs, crops, ref_crops, tau, 0.6)

    s = recognition.recognition_similarity(images, refs)
    flags = recognition.recognized(s, tau)
    real = realization.realize(crops, ref_crops, 0.6)

    np.testing.assert_allclose(s, [e["s"] for e in expected], atol=1e-12)
    assert flags.tolist() == [e["recognized"] for e in expected]
    assert recognition.cra(flags) == pytest.approx(cra)
    np.testing.assert_allclose(real.vr, [e["vr"] for e in expected])
    np.testing.assert_allclose(real.vi, [e["vi"] for e in expected])
    assert real.reuse_map.reshape(len(images), -1).astype(int).tolist() == [e["r"] for e in expected]
    np.testing.assert_allclose(real.crop_similarity_max, [max(e["m"]) for e in expected], atol=1e-12)
    np.testing.assert_allclose(real.crop_similarity_mean, [sum(e["m"]) / 16 for e in expected], atol=1e-12)
    np.testing.assert_allclose(real.crop_similarity_p90, [np.percentile(e["m"], 90) for e in expected], atol=1e-12)
    assert aggregation.crt(flags, real.vi) == pytest.approx(crt_recognized)
    assert aggregation.crt(flags, real.vi, CrtVariant.ALL_IMAGES) == pytest.approx(crt_all)


def test_reuse_map_is_row_major():
    e = np.eye(2)
    # Crop 1 (row 0, column 1) and crop 2 (row 1, column 0) match the reference.
    crops = e[None, [1, 0, 0, 1]]
    real = realization.realize(crops, e[[0]], 0.5, grid=(2, 2))
    assert real.reuse_map[0].tolist() == [[False, True], [True, False]]


def test_m_takes_any_position_of_any_reference():
    e = np.eye(3)
    # The generated crop matches the last crop of the second reference image.
    ref_crops = np.stack([e[0], e[0], e[1], e[2]])
    m = realization.crop_similarity(e[None, [2]], ref_crops)
    assert m.tolist() == [[1.0]]


def test_no_image_recognized_gives_zero_crt_but_all_images_variant_does_not():
    flags = np.array([False, False, False])
    vi = np.array([0.2, 0.5, 1.0])
    assert recognition.cra(flags) == 0.0
    assert aggregation.crt(flags, vi) == 0.0
    assert aggregation.crt(flags, vi, CrtVariant.ALL_IMAGES) == 0.0  # CRA is 0


def test_one_crop_grid():
    e = np.eye(2)
    real = realization.realize(e[[[0], [1]]], e[[0]], 0.5, grid=(1, 1))
    assert real.vr.tolist() == [1.0, 0.0]
    assert real.reuse_map.shape == (2, 1, 1)


def test_identical_images():
    rng = np.random.default_rng(0)
    ref = unit_rows(rng, 1, 8)
    ref_crops = unit_rows(rng, 16, 8)
    s = recognition.recognition_similarity(ref, ref)
    real = realization.realize(ref_crops[None], ref_crops, 0.6)
    assert s[0] == pytest.approx(1.0)
    assert real.vr[0] == 1.0 and real.vi[0] == 0.0
    flags = recognition.recognized(s, 0.7)
    assert aggregation.crt(flags, real.vi) == 0.0  # recognized and fully replicated


@pytest.mark.parametrize("seed", range(20))
def test_properties(seed):
    images, refs, crops, ref_crops = make_case(seed, n=10, m=1 + seed % 5)
    s = recognition.recognition_similarity(images, refs)
    previous = None
    for tau in np.linspace(0.05, 0.95, 10):
        flags = recognition.recognized(s, tau)
        real = realization.realize(crops, ref_crops, tau)
        cra = recognition.cra(flags)
        assert np.all((0 <= real.vr) & (real.vr <= 1))
        np.testing.assert_allclose(real.vi, 1 - real.vr)
        for variant in CrtVariant:
            assert aggregation.crt(flags, real.vi, variant) <= cra + 1e-12
        if previous is not None:
            # Raising a threshold never adds recognized images or reused crops.
            assert cra <= previous[0] and np.all(real.vr <= previous[1])
        previous = (cra, real.vr)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_thresholds_outside_open_unit_interval_are_refused(bad):
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        recognition.recognized(np.array([0.5]), bad)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        realization.reuse(np.array([[0.5]]), bad)


def test_invalid_shapes_say_what_was_wrong():
    with pytest.raises(ValueError, match="embedding sizes differ: 3 and 4"):
        recognition.recognition_similarity(np.ones((2, 3)), np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"expected \(n, K, D\)"):
        realization.crop_similarity(np.ones((2, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least one image"):
        recognition.cra(np.array([], dtype=bool))
    with pytest.raises(ValueError, match="one recognized flag per VI value"):
        aggregation.crt(np.array([True]), np.array([0.1, 0.2]))


def test_bootstrap_interval_contains_mean_and_is_reproducible():
    values = np.random.default_rng(1).uniform(size=50)
    mean, low, high = aggregation.bootstrap_mean_interval(values, seed=3)
    assert low < mean < high
    assert aggregation.bootstrap_mean_interval(values, seed=3) == (mean, low, high)
    assert mean == pytest.approx(values.mean())
