"""Recognition: s_i, recognized_i and CRA (METHOD.md, "Recognition").

Embeddings are L2-normalised rows, so a matrix product gives cosine similarities.
"""

from __future__ import annotations

import numpy as np

# METHOD.md's thresholds for CLIP ViT-B/16: one reference image, or the max over several.
TAU_STATIC = 0.70
TAU_DYNAMIC = 0.75


def recognition_similarity(image_embeddings: np.ndarray, reference_embeddings: np.ndarray) -> np.ndarray:
    """s_i = max_j cos(f(I_i), f(R_j)), one value per generated image.

    >>> recognition_similarity(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]]))
    array([1., 0.])
    """
    _check_embeddings(image_embeddings, reference_embeddings)
    return (image_embeddings @ reference_embeddings.T).max(axis=1)


def recognized(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """recognized_i = s_i > tau."""
    check_threshold(threshold, "recognition threshold")
    return np.asarray(similarity) > threshold


def cra(recognized_flags: np.ndarray) -> float:
    """CRA = (1/n) sum_i recognized_i."""
    flags = np.asarray(recognized_flags, dtype=bool)
    if flags.size == 0:
        raise ValueError("CRA needs at least one image")
    return float(flags.mean())


def check_threshold(threshold: float, what: str) -> None:
    if not (0.0 < float(threshold) < 1.0):
        raise ValueError(f"{what} must lie in (0, 1), got {threshold}")


def _check_embeddings(images: np.ndarray, references: np.ndarray) -> None:
    if images.ndim != 2 or references.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got {images.shape} and {references.shape}")
    if images.shape[1] != references.shape[1]:
        raise ValueError(f"embedding sizes differ: {images.shape[1]} and {references.shape[1]}")
    if len(references) == 0:
        raise ValueError("no reference embeddings")
