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
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr
from scipy.stats import rankdata

from services.scorer import edits
from services.scorer.crops import GRID, grid_crops
from services.scorer.encoders import Encoder, Thresholds, embed
from services.scorer.realization import crop_similarity
from services.scorer.recognition import recognition_similarity
from services.scorer.references import Imagery, Reference, load_catalog

RULE = "max balanced accuracy of the scores smoothed by Gaussians of Silverman bandwidth (per class)"
THRESHOLD_NAMES = ("recognition_static", "recognition_dynamic", "reuse")
DEFAULT_REPLICAS = 4

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
    ranks = rankdata(np.concatenate([positives, negatives]))
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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


def _work_rng(seed: int, reference_id: str) -> np.random.Generator:
    """Each work's own stream: its replicas do not depend on which other works are calibrated."""
    return np.random.default_rng([seed, zlib.crc32(reference_id.encode())])


def _embed_views(encoder: Encoder, images: Sequence[np.ndarray], grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    tensors = [torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1) for p in images]
    whole = embed(encoder, tensors)
    crops = embed(encoder, [crop for t in tensors for crop in grid_crops(t, grid)])
    return whole, crops.reshape(len(images), grid[0] * grid[1], -1)


def _prepare_work(encoder: Encoder, reference: Reference, seed: int, replicas: int, grid: tuple[int, int]) -> _Work:
    rng = _work_rng(seed, reference.reference_id)
    images, crops = _embed_views(encoder, [image.pixels for image in reference.images], grid)
    kept = {image.name for image in reference.pool(Imagery.DYNAMIC)}
    pool = [i for i, image in enumerate(reference.images) if image.name in kept]
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
    static, dynamic, reuse = (separation(*scores[name]) for name in THRESHOLD_NAMES)
    thresholds = Thresholds(static.threshold, dynamic.threshold, reuse.threshold)
    _check_thresholds(thresholds)
    return Calibration(thresholds, static, dynamic, reuse,
                       _provenance(encoder, references, works, seed, replicas_per_work, grid, source))


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
    parser.add_argument("--references", required=True, type=Path, metavar="DIR",
                        help="a references folder: catalog.json and a subfolder of images per work (../shared/data/references)")
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

    entries = load_catalog(args.references)
    if len(entries) < 2:
        raise ValueError(f"calibration needs at least two works in {args.references}, found {len(entries)}")
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    references = [entry.load() for entry in entries]
    is_classical = args.encoder == CLASSICAL
    if not is_classical and args.out is None:
        raise ValueError(f"--out is required for encoder {args.encoder!r} (only classical has a shipped file)")
    encoder, extra = _encoder_to_calibrate(args, references, is_classical)
    calibration = calibrate(encoder, references, seed=args.seed, replicas_per_work=args.replicas,
                            source=str(args.references), progress=progress)
    out = args.out or _classical_file()
    document = {"encoder": encoder.name, **calibration.to_json(), **extra}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(format_calibration(calibration))
    print(f"written to {out}")
    return 0


def _classical_file() -> Path:
    from services.scorer.encoders.classical import THRESHOLDS_FILE

    return THRESHOLDS_FILE


def _encoder_to_calibrate(args: argparse.Namespace, references: Sequence[Reference], is_classical: bool) -> tuple[Encoder, dict]:
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
        background = fit_background(images, {"references": str(args.references), "images": len(images)})
    return ClassicalEncoder(background), {"background": background.to_json()}


def format_calibration(calibration: Calibration) -> str:
    """A short table: each threshold and how well it separates."""
    lines = [f"{'threshold':<20} {'value':>7} {'AUC':>7} {'TPR':>7} {'FPR':>7} {'pos p5':>7} {'neg p99':>7}  pairs (+/-)"]
    for name in THRESHOLD_NAMES:
        s: Separation = getattr(calibration, name)
        lines.append(f"{name:<20} {s.threshold:>7.3f} {s.roc_auc:>7.4f} {s.true_positive_rate:>7.3f} "
                     f"{s.false_positive_rate:>7.4f} {s.positive_percentiles['p5']:>7.3f} "
                     f"{s.negative_percentiles['p99']:>7.3f}  {s.positives}/{s.negatives}")
    lines.append(f"encoder {calibration.provenance.get('encoder_identity')}, seed {calibration.provenance.get('seed')}")
    return "\n".join(lines)
