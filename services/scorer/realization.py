"""Realization: m_ik, r_ik, VR, VI and the reuse map (METHOD.md, "Realization")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.scorer.recognition import check_threshold

# METHOD.md's reuse threshold for DINO crops.
TAU_REUSE = 0.6


def crop_similarity(image_crop_embeddings: np.ndarray, reference_crop_embeddings: np.ndarray) -> np.ndarray:
    """m_ik = max over every crop of every kept reference image of cos(g(P_ik), g(R_jm)).

    `image_crop_embeddings` is (n, K, D); `reference_crop_embeddings` is (J, D): all crops of
    all kept reference images, flattened, since any position may match. Returns (n, K).
    """
    if image_crop_embeddings.ndim != 3 or reference_crop_embeddings.ndim != 2:
        raise ValueError(
            f"expected (n, K, D) image crops and (J, D) reference crops, got "
            f"{image_crop_embeddings.shape} and {reference_crop_embeddings.shape}"
        )
    return (image_crop_embeddings @ reference_crop_embeddings.T).max(axis=2)


def reuse(m: np.ndarray, threshold: float = TAU_REUSE) -> np.ndarray:
    """r_ik = 1[m_ik > tau_reuse]."""
    check_threshold(threshold, "reuse threshold")
    return np.asarray(m) > threshold


def visual_reuse(r: np.ndarray) -> np.ndarray:
    """VR_i = (1/K) sum_k r_ik."""
    return np.asarray(r, dtype=np.float64).mean(axis=-1)


def visual_independence(vr: np.ndarray) -> np.ndarray:
    """VI_i = 1 - VR_i."""
    return 1.0 - np.asarray(vr, dtype=np.float64)


@dataclass(frozen=True)
class Realization:
    """Per-image realization: VR, VI, the reuse map and the m_ik diagnostics."""

    vr: np.ndarray  # (n,)
    vi: np.ndarray  # (n,)
    reuse_map: np.ndarray  # (n, rows, cols) bool
    crop_similarity_max: np.ndarray
    crop_similarity_mean: np.ndarray
    crop_similarity_p90: np.ndarray


def realize(
    image_crop_embeddings: np.ndarray,
    reference_crop_embeddings: np.ndarray,
    threshold: float = TAU_REUSE,
    grid: tuple[int, int] = (4, 4),
) -> Realization:
    """Chains the steps above for a batch of generated images.

    >>> e = np.eye(2)
    >>> realize(e[None, [0, 1, 0, 0]], e[[0]], 0.5, (2, 2)).vr
    array([0.75])
    """
    m = crop_similarity(image_crop_embeddings, reference_crop_embeddings)
    r = reuse(m, threshold)
    vr = visual_reuse(r)
    return Realization(
        vr=vr,
        vi=visual_independence(vr),
        reuse_map=r.reshape(len(r), *grid),
        crop_similarity_max=m.max(axis=1),
        crop_similarity_mean=m.mean(axis=1),
        crop_similarity_p90=np.percentile(m, 90, axis=1),
    )
