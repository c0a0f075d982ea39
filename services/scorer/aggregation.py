"""CRT and model-level aggregation (METHOD.md, "Transformation")."""

from __future__ import annotations

from enum import Enum

import numpy as np


class CrtVariant(str, Enum):
    # METHOD.md's default: VI of an image that does not evoke the reference says nothing
    # about how the reference was realized.
    RECOGNIZED_IMAGES = "recognized_images"
    ALL_IMAGES = "all_images"


def crt(recognized_flags: np.ndarray, vi: np.ndarray, variant: CrtVariant = CrtVariant.RECOGNIZED_IMAGES) -> float:
    """CRT = CRA x mean VI, the mean over recognized images (0 when none) or over all images.

    >>> crt(np.array([True, False]), np.array([0.5, 1.0]))
    0.25
    >>> crt(np.array([True, False]), np.array([0.5, 1.0]), CrtVariant.ALL_IMAGES)
    0.375
    """
    flags = np.asarray(recognized_flags, dtype=bool)
    vi = np.asarray(vi, dtype=np.float64)
    if flags.shape != vi.shape or flags.size == 0:
        raise ValueError(f"need one recognized flag per VI value, got {flags.shape} and {vi.shape}")
    cra = float(flags.mean())
    if CrtVariant(variant) is CrtVariant.ALL_IMAGES:
        return cra * float(vi.mean())
    if not flags.any():
        return 0.0
    return cra * float(vi[flags].mean())


def bootstrap_mean_interval(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over references with a percentile bootstrap interval, resampling references.

    >>> bootstrap_mean_interval(np.array([1.0, 1.0, 1.0]))
    (1.0, 1.0, 1.0)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to aggregate")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(values.mean()), float(low), float(high)
