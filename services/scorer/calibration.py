"""Calibrating an encoder's thresholds on real reference images and controlled edits of them.

METHOD.md's thresholds (0.70 / 0.75 / 0.6) were set for CLIP and DINO; another encoder needs
its own. We make pairs whose answer is known and put each threshold where it best separates
them:

- recognition, static: replicas of a work (`edits.replica`) against its canonical image
  (positives) and every image of every other work against it (negatives);
- recognition, dynamic: the same images against all de-duplicated images of the work (the max
  over them), plus a replica of each of its other kept images as positives;
- reuse: each grid crop of a replica against every crop of the canonical image (the max, as in
  realization), against the crops of every image of the other works.

The rule: the threshold that maximises balanced accuracy, (TPR + TNR) / 2, with every score
spread by a Gaussian (Silverman's bandwidth, per class), which is where the two smoothed
score densities cross. Balanced, so that 30 positives count as much as 2,000 negatives;
smoothed, so that when the classes separate (whole images do) the threshold does not hang on
the single lowest positive and single highest negative; when they overlap (crops do), it is
where the two error rates trade evenly. Everything is seeded, so a calibration is reproducible
from its provenance.

`calibrate_labelled` puts the same rule on a labelled set instead (`services.scorer.validation`:
replicas, composites, transformations, unrelated works, generated or labelled by people):
recognition separates the pairs that evoke the work (replicas, transformations, composites
taking at least half of its cells) from unrelated ones; reuse separates crops that are the
work's (every crop of a replica, a composite's recorded cells) from crops that are not (a
composite's other cells, every crop of an unrelated image). `plot_calibration` draws each
threshold's ROC curve and balanced accuracy against the threshold.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.special import ndtr

from services.scorer import edits
from services.scorer.aggregation import average_ranks
from services.scorer.crops import GRID, grid_crops
from services.scorer.encoders import Encoder, Thresholds, embed
from services.scorer.realization import crop_similarity
from services.scorer.recognition import recognition_similarity
from services.scorer.references import Imagery, Reference, load_catalog

if TYPE_CHECKING:
    from services.scorer.validation import LabelledPair

RULE = "max balanced accuracy of the scores smoothed by Gaussians of Silverman bandwidth (per class)"
THRESHOLD_NAMES = ("recognition_static", "recognition_dynamic", "reuse")
DEFAULT_REPLICAS = 4
# On a labelled set, a composite evokes the work when at least half of its cells are the work's.
EVOKED_PARTIAL_K = 8
LABELLED_CRITERION = {
    "recognition": f"positives: replica, transformation and partial with k >= {EVOKED_PARTIAL_K} pairs; "
                   "negatives: unrelated pairs (static: s_i against the canonical image; dynamic: the max over "
                   "the work's de-duplicated images)",
    "reuse": "positives: every crop of a replica and the recorded cells of a partial; negatives: the other cells "
             "of a partial and every crop of an unrelated image (m_ik against the canonical image's crops)",
}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Separation:
    """How one threshold separates its positive and negative scores."""

    threshold: float
    positives: int
    negatives: int
    roc_auc: float
    balanced_accuracy: float
    true_positive_rate: float
    false_positive_rate: float
    positive_percentiles: dict[str, float]
    negative_percentiles: dict[str, float]


@dataclass(frozen=True)
class Calibration:
    thresholds: Thresholds
    recognition_static: Separation
    recognition_dynamic: Separation
    reuse: Separation
    provenance: dict[str, Any] = field(default_factory=dict)
    # The (positive, negative) scores behind each threshold, by name: for plots, not saved.
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """classical.json's layout: "thresholds", then "calibration" (statistics, provenance)."""
        return {
            "thresholds": asdict(self.thresholds),
            "calibration": {
                "rule": RULE,
                "recognition_static": asdict(self.recognition_static),
                "recognition_dynamic": asdict(self.recognition_dynamic),
                "reuse": asdict(self.reuse),
                "provenance": self.provenance,
            },
        }


# -- the rule ------------------------------------------------------------------------------------
def smoothed_balanced_accuracy_threshold(positives: np.ndarray, negatives: np.ndarray) -> float:
    """The threshold maximising balanced accuracy, (TPR + TNR) / 2 of `score > threshold`,
    once each score is spread by a Gaussian of its class's Silverman bandwidth.

    Without the smoothing, classes that just separate put the threshold in the middle of
    whatever gap is left between the single lowest positive and the single highest negative,
    which moves with one outlier; smoothed, it sits where the two distributions' tails weigh
    the same (where their densities cross).

    >>> balanced = smoothed_balanced_accuracy_threshold(np.array([0.8, 0.85, 0.9]), np.array([0.1, 0.3, 0.5]))
    >>> 0.5 < balanced < 0.8
    True
    """
    positives, negatives = np.asarray(positives, float).ravel(), np.asarray(negatives, float).ravel()
    if positives.size == 0 or negatives.size == 0:
        raise ValueError(f"need positives and negatives, got {positives.size} and {negatives.size}")
    bandwidths = _silverman_bandwidth(positives), _silverman_bandwidth(negatives)
    low, high = min(positives.min(), negatives.min()), max(positives.max(), negatives.max())
    candidates = np.linspace(low, high, 2001)
    best = candidates[np.argmax(_smoothed_balanced_accuracy(positives, negatives, candidates, bandwidths))]
    step = candidates[1] - candidates[0]
    fine = np.linspace(best - step, best + step, 201)
    return round(float(fine[np.argmax(_smoothed_balanced_accuracy(positives, negatives, fine, bandwidths))]), 6)


def _silverman_bandwidth(values: np.ndarray) -> float:
    spread = min(values.std(), (np.percentile(values, 75) - np.percentile(values, 25)) / 1.34) or values.std()
    return max(0.9 * spread * values.size ** -0.2, 1e-4)


def _smoothed_balanced_accuracy(positives: np.ndarray, negatives: np.ndarray, thresholds: np.ndarray,
                                bandwidths: tuple[float, float]) -> np.ndarray:
    return (_smoothed_share_above(positives, thresholds, bandwidths[0])
            + 1.0 - _smoothed_share_above(negatives, thresholds, bandwidths[1])) / 2.0


def _smoothed_share_above(values: np.ndarray, thresholds: np.ndarray, bandwidth: float, chunk: int = 4096) -> np.ndarray:
    """mean_i P(values_i + noise > t) for each t, noise ~ N(0, bandwidth^2); in chunks of
    values, to bound memory with tens of thousands of crop pairs."""
    total = np.zeros(thresholds.size)
    for start in range(0, values.size, chunk):
        part = values[start : start + chunk]
        total += ndtr((part[:, None] - thresholds[None, :]) / bandwidth).sum(axis=0)
    return total / values.size


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(positive > negative), ties counting half (Mann-Whitney).

    >>> roc_auc(np.array([0.9, 0.5]), np.array([0.5, 0.1]))
    0.875
    """
    ranks = average_ranks(np.concatenate([positives, negatives]))
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of `score >= t` for every distinct score t, highest first, from (0, 0) to
    (1, 1). Tied scores move both rates at once, so the trapezoid area under the points is
    `roc_auc`.

    >>> fpr, tpr = roc_curve(np.array([0.9, 0.5]), np.array([0.5, 0.1]))
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    positives, negatives = np.sort(np.asarray(positives, float).ravel()), np.sort(np.asarray(negatives, float).ravel())
    if positives.size == 0 or negatives.size == 0:
        raise ValueError(f"need positives and negatives, got {positives.size} and {negatives.size}")
    thresholds = np.unique(np.concatenate([positives, negatives]))[::-1]
    tpr = (positives.size - np.searchsorted(positives, thresholds, side="left")) / positives.size
    fpr = (negatives.size - np.searchsorted(negatives, thresholds, side="left")) / negatives.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def balanced_accuracy(positives: np.ndarray, negatives: np.ndarray, threshold: float) -> float:
    """(TPR + TNR) / 2 of `score > threshold`.

    >>> balanced_accuracy(np.array([0.8, 0.9]), np.array([0.1, 0.85]), 0.5)
    0.75
    """
    tpr = float((np.asarray(positives) > threshold).mean())
    tnr = float((np.asarray(negatives) <= threshold).mean())
    return (tpr + tnr) / 2.0


def separation(positives: np.ndarray, negatives: np.ndarray) -> Separation:
    threshold = smoothed_balanced_accuracy_threshold(positives, negatives)
    tpr, fpr = float((positives > threshold).mean()), float((negatives > threshold).mean())
    return Separation(
        threshold=threshold,
        positives=int(positives.size),
        negatives=int(negatives.size),
        roc_auc=round(roc_auc(positives, negatives), 6),
        balanced_accuracy=round(balanced_accuracy(positives, negatives, threshold), 6),
        true_positive_rate=round(tpr, 6),
        false_positive_rate=round(fpr, 6),
        positive_percentiles=_percentiles(positives, (0, 1, 5, 10, 50)),
        negative_percentiles=_percentiles(negatives, (50, 90, 95, 99, 100)),
    )


def _percentiles(values: np.ndarray, which: Sequence[int]) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(values, q)), 6) for q in which}


# -- the pairs -----------------------------------------------------------------------------------
@dataclass
class _Work:
    """One reference's embeddings: every image (whole and crops), its dynamic pool, its replicas."""

    reference: Reference
    images: np.ndarray  # (m, D)
    crops: np.ndarray  # (m, K, D')
    pool: list[int]  # indices of the de-duplicated images
    replicas: np.ndarray  # (r, D): replicas of the canonical image
    replica_crops: np.ndarray  # (r, K, D')
    pool_replicas: np.ndarray  # (p, D): one replica of each other kept image
    edits: list[dict[str, Any]]


def work_rng(seed: int, reference_id: str) -> np.random.Generator:
    """Each work's own stream: its replicas do not depend on which other works are calibrated."""
    return np.random.default_rng([seed, zlib.crc32(reference_id.encode())])


def _embed_views(encoder: Encoder, images: Sequence[np.ndarray], grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    tensors = [torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1) for p in images]
    whole = embed(encoder, tensors)
    crops = embed(encoder, [crop for t in tensors for crop in grid_crops(t, grid)])
    return whole, crops.reshape(len(images), grid[0] * grid[1], -1)


def _embed_work(encoder: Encoder, reference: Reference, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Every image of the work embedded whole and as crops, and the indices of its dynamic pool."""
    images, crops = _embed_views(encoder, [image.pixels for image in reference.images], grid)
    kept = {image.name for image in reference.pool(Imagery.DYNAMIC)}
    return images, crops, [i for i, image in enumerate(reference.images) if image.name in kept]


def _prepare_work(encoder: Encoder, reference: Reference, seed: int, replicas: int, grid: tuple[int, int]) -> _Work:
    rng = work_rng(seed, reference.reference_id)
    images, crops, pool = _embed_work(encoder, reference, grid)
    made = [edits.replica(reference.images[0].pixels, rng) for _ in range(replicas)]
    made_pool = [edits.replica(reference.images[i].pixels, rng) for i in pool if i != 0]
    replica_images, replica_crops = _embed_views(encoder, [p for p, _ in made], grid)
    pool_replicas = _embed_views(encoder, [p for p, _ in made_pool], grid)[0] if made_pool else replica_images[:0]
    return _Work(reference, images, crops, pool, replica_images, replica_crops, pool_replicas,
                 [done for _, done in made + made_pool])


def _recognition_scores(works: Sequence[_Work], dynamic: bool) -> tuple[np.ndarray, np.ndarray]:
    positives, negatives = [], []
    for w, work in enumerate(works):
        references = work.images[work.pool] if dynamic else work.images[:1]
        candidates = np.concatenate([work.replicas, work.pool_replicas]) if dynamic else work.replicas
        positives.append(recognition_similarity(candidates, references))
        others = np.concatenate([other.images for v, other in enumerate(works) if v != w])
        negatives.append(recognition_similarity(others, references))
    return np.concatenate(positives), np.concatenate(negatives)


def _reuse_scores(works: Sequence[_Work]) -> tuple[np.ndarray, np.ndarray]:
    positives, negatives = [], []
    for w, work in enumerate(works):
        reference_crops = work.crops[0]  # the canonical image's crops, as in static realization
        positives.append(crop_similarity(work.replica_crops, reference_crops).ravel())
        others = np.concatenate([other.crops for v, other in enumerate(works) if v != w])
        negatives.append(crop_similarity(others, reference_crops).ravel())
    return np.concatenate(positives), np.concatenate(negatives)


# -- calibrate -----------------------------------------------------------------------------------
def calibrate(
    encoder: Encoder,
    references: Sequence[Reference],
    seed: int = 0,
    replicas_per_work: int = DEFAULT_REPLICAS,
    grid: tuple[int, int] = GRID,
    source: str | None = None,
    progress: Progress | None = None,
) -> Calibration:
    """Thresholds for `encoder` from replicas and other works of `references` (at least two
    works), with their separation statistics and provenance.

    >>> from services.common.images import DecodedImage
    >>> from services.scorer.encoders.classical import ClassicalEncoder
    >>> rng = np.random.default_rng(0)
    >>> works = [Reference(f"w{i}", (DecodedImage("1.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), str(i)),))
    ...          for i in range(3)]
    >>> c = calibrate(ClassicalEncoder(background=None), works, replicas_per_work=1)
    >>> c.recognition_static.positives, c.recognition_static.negatives, c.reuse.positives
    (3, 6, 48)
    """
    scores, works = _pair_scores(encoder, references, seed, replicas_per_work, grid, progress)
    return _calibration(scores, _provenance(encoder, references, works, seed, replicas_per_work, grid, source))


def _calibration(scores: dict[str, tuple[np.ndarray, np.ndarray]], provenance: dict[str, Any]) -> Calibration:
    static, dynamic, reuse = (separation(*scores[name]) for name in THRESHOLD_NAMES)
    thresholds = Thresholds(static.threshold, dynamic.threshold, reuse.threshold)
    _check_thresholds(thresholds)
    return Calibration(thresholds, static, dynamic, reuse, provenance, scores)


def pair_scores(
    encoder: Encoder,
    references: Sequence[Reference],
    seed: int = 0,
    replicas_per_work: int = DEFAULT_REPLICAS,
    grid: tuple[int, int] = GRID,
    progress: Progress | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (positive, negative) scores behind each threshold, by threshold name: what
    `calibrate` separates, for checking a threshold against fresh pairs."""
    return _pair_scores(encoder, references, seed, replicas_per_work, grid, progress)[0]


def _pair_scores(encoder: Encoder, references: Sequence[Reference], seed: int, replicas_per_work: int,
                 grid: tuple[int, int], progress: Progress | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[_Work]]:
    if len(references) < 2:
        raise ValueError(f"calibration needs at least two works (negatives are other works), got {len(references)}")
    if replicas_per_work < 1:
        raise ValueError(f"replicas_per_work must be at least 1, got {replicas_per_work}")
    works = []
    for i, reference in enumerate(references):
        if progress is not None:
            progress(f"[{i + 1}/{len(references)}] {reference.reference_id}")
        works.append(_prepare_work(encoder, reference, seed, replicas_per_work, grid))
    scores = {
        "recognition_static": _recognition_scores(works, dynamic=False),
        "recognition_dynamic": _recognition_scores(works, dynamic=True),
        "reuse": _reuse_scores(works),
    }
    return scores, works


# -- calibrating on a labelled set -------------------------------------------------------------------
def calibrate_labelled(
    encoder: Encoder,
    pairs: Sequence[LabelledPair],
    references: Sequence[Reference],
    grid: tuple[int, int] = GRID,
    source: str | None = None,
    progress: Progress | None = None,
) -> Calibration:
    """Thresholds for `encoder` from a labelled set (`LABELLED_CRITERION` says which pairs and
    crops are positive), with their separation statistics and provenance.

    >>> from services.common.images import DecodedImage
    >>> from services.scorer.encoders.classical import ClassicalEncoder
    >>> from services.scorer.validation import labelled_pairs
    >>> rng = np.random.default_rng(0)
    >>> works = [Reference(f"w{i}", (DecodedImage("1.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), str(i)),))
    ...          for i in range(3)]
    >>> c = calibrate_labelled(ClassicalEncoder(None), labelled_pairs(works, per_class=1, partial_ks=(8,)), works)
    >>> c.recognition_static.positives, c.recognition_static.negatives, c.reuse.positives, c.reuse.negatives
    (9, 3, 72, 72)
    """
    scores = labelled_pair_scores(encoder, pairs, references, grid, progress)
    return _calibration(scores, _labelled_provenance(encoder, pairs, references, grid, source))


def labelled_pair_scores(
    encoder: Encoder,
    pairs: Sequence[LabelledPair],
    references: Sequence[Reference],
    grid: tuple[int, int] = GRID,
    progress: Progress | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (positive, negative) scores behind each threshold on a labelled set, by name."""
    by_id = {r.reference_id: r for r in references}
    unknown = sorted({p.reference_id for p in pairs} - set(by_id))
    if unknown:
        raise ValueError(f"the labelled set names works that are not among the references: {', '.join(unknown[:5])}")
    works = {}
    for n, work in enumerate(dict.fromkeys(p.reference_id for p in pairs)):
        if progress is not None:
            progress(f"[{n + 1}] {work}")
        works[work] = _embed_work(encoder, by_id[work], grid)
    whole, crops = _embed_views(encoder, [p.image.pixels for p in pairs], grid)
    found: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in THRESHOLD_NAMES}
    for i, pair in enumerate(pairs):
        images, work_crops, pool = works[pair.reference_id]
        evoked = _evokes(pair)
        if evoked is not None:
            found["recognition_static"][0 if evoked else 1].append(float(recognition_similarity(whole[i : i + 1], images[:1])[0]))
            found["recognition_dynamic"][0 if evoked else 1].append(float(recognition_similarity(whole[i : i + 1], images[pool])[0]))
        reused = _reused_cells(pair, grid)
        if reused is not None:
            m = crop_similarity(crops[i : i + 1], work_crops[0])[0]
            found["reuse"][0].extend(m[reused].tolist())
            found["reuse"][1].extend(m[~reused].tolist())
    for name, (positives, negatives) in found.items():
        if not positives or not negatives:
            raise ValueError(f"the labelled set gives {len(positives)} positives and {len(negatives)} negatives for the "
                             f"{name} threshold; it needs both ({LABELLED_CRITERION[name.split('_')[0]]})")
    return {name: (np.array(positives), np.array(negatives)) for name, (positives, negatives) in found.items()}


def _evokes(pair: LabelledPair) -> bool | None:
    """Whether the pair's image evokes its work; None: the pair says nothing about it."""
    if pair.label in ("replica", "transformation"):
        return True
    if pair.label == "unrelated":
        return False
    if pair.label == "partial" and pair.k is not None and pair.k >= EVOKED_PARTIAL_K:
        return True
    return None


def _reused_cells(pair: LabelledPair, grid: tuple[int, int]) -> np.ndarray | None:
    """Which of the image's crops are the work's; None: unknown (transformations, composites
    without recorded cells)."""
    cells = grid[0] * grid[1]
    if pair.label in ("replica", "unrelated"):
        return np.full(cells, pair.label == "replica")
    if pair.label == "partial" and pair.reuse_cells is not None:
        return np.isin(np.arange(cells), pair.reuse_cells)
    return None


def _labelled_provenance(encoder: Encoder, pairs: Sequence[LabelledPair], references: Sequence[Reference],
                         grid: tuple[int, int], source: str | None) -> dict[str, Any]:
    used = sorted({p.reference_id for p in pairs})
    hashes = sorted(image.content_hash for r in references if r.reference_id in used for image in r.images)
    return {
        "encoder": encoder.name,
        "encoder_identity": encoder.identity,
        "labelled_set": {
            "source": source,
            "pairs": {label: sum(p.label == label for p in pairs) for label in dict.fromkeys(p.label for p in pairs)},
            "content_digest": hashlib.sha256("".join(p.image.content_hash for p in pairs).encode()).hexdigest()[:16],
        },
        "references": {"works": used, "images": len(hashes),
                       "content_digest": hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]},
        "criterion": LABELLED_CRITERION,
        "grid": list(grid),
    }


def plot_calibration(calibration: Calibration, path: Path) -> Path:
    """A PNG with, for each threshold, its ROC curve (the chosen point marked) and the balanced
    accuracy against the threshold, raw and smoothed as the rule sees it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not calibration.scores:
        raise ValueError("this calibration carries no scores to plot")
    figure = Figure(figsize=(10, 9.5))
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.06, top=0.9, hspace=0.5, wspace=0.22)
    for row, name in zip(figure.subplots(len(THRESHOLD_NAMES), 2), THRESHOLD_NAMES):
        _plot_threshold(row, name, getattr(calibration, name), *calibration.scores[name])
    figure.suptitle(f"{calibration.provenance.get('encoder_identity', '')}\nrule: {RULE}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def _plot_threshold(axes: Sequence[Any], name: str, s: Separation, positives: np.ndarray, negatives: np.ndarray) -> None:
    fpr, tpr = roc_curve(positives, negatives)
    axes[0].plot(fpr, tpr, drawstyle="default")
    axes[0].plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle=":")
    axes[0].plot([s.false_positive_rate], [s.true_positive_rate], "o", color="crimson", label=f"threshold {s.threshold:.3f}")
    axes[0].set(title=f"{name}: ROC, AUC {s.roc_auc:.4f}", xlabel="false positive rate", ylabel="true positive rate")
    axes[0].legend(loc="lower right", fontsize=8)
    low, high = min(positives.min(), negatives.min()), max(positives.max(), negatives.max())
    thresholds = np.linspace(low, high, 400)
    raw = (1.0 - np.searchsorted(np.sort(positives), thresholds, side="right") / positives.size
           + np.searchsorted(np.sort(negatives), thresholds, side="right") / negatives.size) / 2.0
    bandwidths = _silverman_bandwidth(positives), _silverman_bandwidth(negatives)
    axes[1].plot(thresholds, raw, label="balanced accuracy")
    axes[1].plot(thresholds, _smoothed_balanced_accuracy(positives, negatives, thresholds, bandwidths), label="smoothed (the rule)")
    axes[1].axvline(s.threshold, color="crimson", linewidth=1, label=f"chosen {s.threshold:.3f}")
    axes[1].set(title=f"{name}: {s.positives} positives, {s.negatives} negatives", xlabel="threshold",
                ylabel="(TPR + TNR) / 2", ylim=(0.45, 1.02))
    axes[1].legend(loc="lower left", fontsize=8)


def _check_thresholds(thresholds: Thresholds) -> None:
    for name, value in asdict(thresholds).items():
        if not 0.0 < value < 1.0:
            raise ValueError(f"calibrated {name} threshold {value} is outside (0, 1): the scorer cannot use it; "
                             "this encoder does not separate replicas from other works here")


def _provenance(encoder: Encoder, references: Sequence[Reference], works: Sequence[_Work], seed: int,
                replicas_per_work: int, grid: tuple[int, int], source: str | None) -> dict[str, Any]:
    hashes = sorted(image.content_hash for reference in references for image in reference.images)
    return {
        "encoder": encoder.name,
        "encoder_identity": encoder.identity,
        "references": {
            "source": source,
            "works": [reference.reference_id for reference in references],
            "images": len(hashes),
            "content_digest": hashlib.sha256("".join(hashes).encode()).hexdigest()[:16],
        },
        "seed": seed,
        "replicas_per_work": replicas_per_work,
        "replica_recipe": edits.replica_recipe(),
        "grid": list(grid),
        "replicas": sum(len(work.edits) for work in works),
    }


# -- the `iconicity calibrate` command -------------------------------------------------------------
def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default="classical", metavar="NAME", help="the encoder to calibrate (default: classical)")
    parser.add_argument("--references", type=Path, metavar="DIR",
                        help="a references folder: catalog.json and a subfolder of images per work (../shared/data/references); "
                             "thresholds from replicas of its works")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="instead of --references: a labelled set (`iconicity validate --write-set DIR`, or a folder of "
                             "images with labels.csv); also writes the curves as a PNG beside the JSON")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="where to write the JSON (default for classical: the classical.json shipped beside the encoder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the controlled edits (default: 0)")
    parser.add_argument("--replicas", type=int, default=DEFAULT_REPLICAS, metavar="N",
                        help=f"replicas per work (default: {DEFAULT_REPLICAS})")
    parser.add_argument("--keep-background", action="store_true",
                        help="classical only: keep the shipped background instead of refitting it on these references")
    parser.add_argument("--weights", type=Path, metavar="DIR", help="folder with neural encoder weights")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run_calibrate(args: argparse.Namespace) -> int:
    from services.scorer.encoders import CLASSICAL

    if (args.references is None) == (args.data is None):
        raise ValueError("give exactly one of --references DIR (replicas of its works) or --data DIR (a labelled set)")
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    is_classical = args.encoder == CLASSICAL
    if not is_classical and args.out is None:
        raise ValueError(f"--out is required for encoder {args.encoder!r} (only classical has a shipped file)")
    if args.data is not None:
        pairs, references, source = _labelled_inputs(args.data)
    else:
        entries = load_catalog(args.references)
        if len(entries) < 2:
            raise ValueError(f"calibration needs at least two works in {args.references}, found {len(entries)}")
        pairs, references, source = (), [entry.load() for entry in entries], args.references
    encoder, extra = _encoder_to_calibrate(args, references, is_classical, source)
    if args.data is not None:
        calibration = calibrate_labelled(encoder, pairs, references, source=str(args.data), progress=progress)
    else:
        calibration = calibrate(encoder, references, seed=args.seed, replicas_per_work=args.replicas,
                                source=str(args.references), progress=progress)
    out = args.out or _classical_file()
    document = {"encoder": encoder.name, **calibration.to_json(), **extra}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(format_calibration(calibration))
    print(f"written to {out}")
    if args.data is not None:
        print(f"curves written to {plot_calibration(calibration, out.with_suffix('.png'))}")
    return 0


def _labelled_inputs(data: Path) -> tuple[Sequence[LabelledPair], list[Reference], Path]:
    """The pairs of the labelled set at `data`, the works they name (loaded from the
    references folder the set names) and that folder."""
    from services.scorer.validation import read_labelled_set

    labelled = read_labelled_set(data)
    if labelled.references is None:
        raise ValueError(f"the labelled set at {data} does not say where its works' images are: write it with "
                         f"`iconicity validate --write-set` or put a references folder in {labelled.folder}")
    wanted = {pair.reference_id for pair in labelled.pairs}
    entries = [entry for entry in load_catalog(labelled.references) if entry.slug in wanted]
    missing = sorted(wanted - {entry.slug for entry in entries})
    if missing:
        raise ValueError(f"the labelled set names works not in {labelled.references}: {', '.join(missing[:5])}")
    return labelled.pairs, [entry.load() for entry in entries], labelled.references


def _classical_file() -> Path:
    from services.scorer.encoders.classical import THRESHOLDS_FILE

    return THRESHOLDS_FILE


def _encoder_to_calibrate(args: argparse.Namespace, references: Sequence[Reference], is_classical: bool,
                          source: Path) -> tuple[Encoder, dict]:
    """The encoder, and what to store beside its thresholds: for classical, the background
    (refitted on these references unless asked to keep the shipped one)."""
    if not is_classical:
        from services.scorer.encoders import load_encoder, weights_folder

        return load_encoder(args.encoder, weights=weights_folder(args.encoder, args.weights),
                            device=args.device, dtype=args.dtype), {}
    from services.scorer.encoders.classical import ClassicalEncoder, fit_background, load_background

    background = load_background() if args.keep_background else None
    if background is None:
        images = [image.pixels for reference in references for image in reference.images]
        background = fit_background(images, {"references": str(source), "images": len(images)})
    return ClassicalEncoder(background), {"background": background.to_json()}


def format_calibration(calibration: Calibration) -> str:
    """A short table: each threshold and how well it separates."""
    lines = [f"{'threshold':<20} {'value':>7} {'AUC':>7} {'TPR':>7} {'FPR':>7} {'pos p5':>7} {'neg p99':>7}  pairs (+/-)"]
    for name in THRESHOLD_NAMES:
        s: Separation = getattr(calibration, name)
        lines.append(f"{name:<20} {s.threshold:>7.3f} {s.roc_auc:>7.4f} {s.true_positive_rate:>7.3f} "
                     f"{s.false_positive_rate:>7.4f} {s.positive_percentiles['p5']:>7.3f} "
                     f"{s.negative_percentiles['p99']:>7.3f}  {s.positives}/{s.negatives}")
    provenance = calibration.provenance
    if "labelled_set" in provenance:
        lines.append(f"encoder {provenance.get('encoder_identity')}, labelled set {provenance['labelled_set']['source']}")
        lines.extend(f"{name} pairs: {criterion}" for name, criterion in provenance["criterion"].items())
    else:
        lines.append(f"encoder {provenance.get('encoder_identity')}, seed {provenance.get('seed')}")
    lines.append(f"criterion: {RULE}")
    return "\n".join(lines)
