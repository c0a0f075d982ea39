"""Validation against plain similarity (METHOD.md, last section): do recognition and
realization tell replication from transformation better than one similarity score?

A labelled set of (reference, image) pairs, made from real reference images or read from a
folder that people labelled, in four classes:

- `replica`: an edited copy of the work (`edits.replica`);
- `partial`: a composite taking k of the 16 grid cells from the work, the rest from another
  (`edits.composite`); k and the cells, the true reuse map, are recorded;
- `transformation`: the subject kept but not the pixels (`edits.transformation`);
- `unrelated`: another work's canonical image.

Each pair is scored as the scorer scores a static reference (s_i against the canonical image,
recognized = s_i > tau, VR and VI from the 4x4 crops and tau_reuse, and the CRT of the single
image, recognized x VI), and by the baselines of `services.scorer.baselines`: the global cosine
of each encoder, pHash distance and SSIM. The baselines compare each image with the canonical
image scaled to the web size that every edit starts from (`edits.REPLICA_MAX_SIDE`); every
baseline resizes far below that anyway. For a static reference s_i *is* the recognition
encoder's global cosine, so that baseline is the score that CRA thresholds.

Three tasks, each a ROC AUC per metric, read in the direction in which the metric points to
the task's positive class ("higher" or "lower"):

- replica vs unrelated: CRA, VR and the baselines higher, VI lower;
- replica vs transformation, the paper's claim: VR and the baselines higher, VI and CRT lower
  (a high CRT points to the transformation), CRA higher (both should be recognized: near 0.5
  says recognition alone cannot tell them apart);
- evoked (replica and transformation) vs unrelated: CRA, VR and the baselines higher, VI lower.

CRT is left out of the two tasks against unrelated works: replicas (low VI) and unrelated
works (not recognized) both score near 0. The confusion matrix classifies each pair from
(recognized, VR) at the thresholds in use; partial composites show how VR tracks k/16.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.common.images import DecodedImage, InvalidImage, decode_image
from services.scorer import baselines, edits
from services.scorer.cache import EmbeddingCache
from services.scorer.calibration import roc_auc, roc_curve, work_rng
from services.scorer.crops import GRID
from services.scorer.encoders import Encoder, Thresholds
from services.scorer.references import Imagery, Reference, load_catalog
from services.scorer.scoring import Scorer

LABELS = ("replica", "partial", "transformation", "unrelated")
PREDICTED = ("replica", "transformation", "unrelated")
# A recognized image whose crops reuse more than this share of the work is predicted a replica.
REPLICA_VR = 0.5
DEFAULT_PER_CLASS = 2
PARTIAL_KS = (2, 4, 6, 8, 10, 12, 14)
CELLS = GRID[0] * GRID[1]
LABELS_FILE = "labels.csv"
SET_FILE = "set.json"
COLUMNS = ("reference_id", "image", "label", "k", "reuse_cells", "source", "edit")
REQUIRED_COLUMNS = COLUMNS[:3]

HIGHER, LOWER = "higher", "lower"
PHASH, SSIM = "pHash distance", "SSIM"

Progress = Callable[[str], None]


# -- the labelled set ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledPair:
    """An image and the work it is compared with, labelled with one of `LABELS`. For a
    composite, `k` cells of the image are the work's: `reuse_cells`, row-major."""

    reference_id: str
    image: DecodedImage
    label: str
    k: int | None = None
    reuse_cells: tuple[int, ...] | None = None
    source: str = "generated"
    edit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label {self.label!r} is not one of {', '.join(LABELS)}")
        if self.k is not None and not 0 <= self.k <= CELLS:
            raise ValueError(f"k must lie in [0, {CELLS}], got {self.k}")
        if self.reuse_cells is not None:
            if any(not 0 <= c < CELLS for c in self.reuse_cells) or len(set(self.reuse_cells)) != len(self.reuse_cells):
                raise ValueError(f"reuse cells must be distinct cells of [0, {CELLS}), got {list(self.reuse_cells)}")
            if self.k is not None and self.k != len(self.reuse_cells):
                raise ValueError(f"k = {self.k} but {len(self.reuse_cells)} reuse cells {list(self.reuse_cells)}")


@dataclass(frozen=True)
class LabelledSet:
    """Pairs read from a folder, and where the works' images are (None: the folder does not say)."""

    pairs: tuple[LabelledPair, ...]
    folder: Path
    references: Path | None


def labelled_pairs(references: Sequence[Reference], *, seed: int = 0, per_class: int = DEFAULT_PER_CLASS,
                   partial_ks: Sequence[int] = PARTIAL_KS,
                   web_size: Mapping[str, np.ndarray] | None = None) -> list[LabelledPair]:
    """For each work: `per_class` replicas, transformations and other works, and one composite
    per k of `partial_ks`, edited from its canonical image at web size (`web_sizes`, made here
    unless given). Each work draws from its own stream, so its replicas and transformations do
    not depend on which other works are in the set.

    >>> rng = np.random.default_rng(0)
    >>> works = [Reference(f"w{i}", (DecodedImage("1.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), str(i)),))
    ...          for i in range(3)]
    >>> sorted(Counter(p.label for p in labelled_pairs(works, per_class=1, partial_ks=(4, 8))).items())
    [('partial', 6), ('replica', 3), ('transformation', 3), ('unrelated', 3)]
    """
    if len(references) < 2:
        raise ValueError(f"a labelled set needs at least two works (unrelated pairs are other works), got {len(references)}")
    if per_class < 0:
        raise ValueError(f"per_class must be at least 0, got {per_class}")
    for k in partial_ks:
        if not 0 <= k <= CELLS:
            raise ValueError(f"partial k must lie in [0, {CELLS}], got {k}")
    canonical = web_size if web_size is not None else web_sizes(references)
    return [pair for r in references for pair in _work_pairs(r.reference_id, canonical, seed, per_class, partial_ks)]


def web_sizes(references: Sequence[Reference], works: set[str] | None = None) -> dict[str, np.ndarray]:
    """Each work's canonical image scaled to at most `edits.REPLICA_MAX_SIDE` (of the `works`
    named, else of all): what the edits start from and the baselines compare with. Made once
    per work, as shrinking a full-size reference is slow."""
    return {r.reference_id: edits.shrink(r.images[0].pixels, edits.REPLICA_MAX_SIDE)
            for r in references if works is None or r.reference_id in works}


def _work_pairs(work: str, canonical: Mapping[str, np.ndarray], seed: int, per_class: int,
                partial_ks: Sequence[int]) -> list[LabelledPair]:
    rng = work_rng(seed, work)
    own = canonical[work]
    pairs = []
    # The work's own edits first: how many draws picking another work takes depends on how
    # many there are, and must not change them.
    for n in range(per_class):
        pixels, done = edits.replica(own, rng)
        pairs.append(LabelledPair(work, as_image(pixels, f"{work}-replica-{n}"), "replica", edit={"edit": "replica", **done}))
    for n in range(per_class):
        pixels, done = edits.transformation(own, rng)
        pairs.append(LabelledPair(work, as_image(pixels, f"{work}-transformation-{n}"), "transformation",
                                  edit={"edit": "transformation", **done}))
    others = sorted(w for w in canonical if w != work)
    at_own_size: dict[str, np.ndarray] = {}
    for k in partial_ks:
        other = others[int(rng.integers(len(others)))]
        if other not in at_own_size:
            # `composite` resizes the other work to this one's size; given it at that size, it
            # only copies it, so each other work is resized once, not once per k.
            at_own_size[other] = edits.resize(canonical[other], own.shape[0], own.shape[1])
        pixels, cells = edits.composite(own, at_own_size[other], k, rng)
        pairs.append(LabelledPair(work, as_image(pixels, f"{work}-partial-{k}"), "partial", k, cells,
                                  edit={"edit": "composite", "other": other}))
    for other in rng.choice(others, size=min(per_class, len(others)), replace=False):
        pairs.append(LabelledPair(work, as_image(canonical[str(other)], f"{work}-unrelated-{other}"), "unrelated",
                                  edit={"edit": "other work", "other": str(other)}))
    return pairs


def as_image(pixels: np.ndarray, name: str) -> DecodedImage:
    """Pixels made in memory as a `DecodedImage`, hashed by content."""
    return DecodedImage(name, pixels, baselines.pixels_key(pixels))


def write_labelled_set(pairs: Sequence[LabelledPair], folder: str | Path, references: str | Path | None = None) -> Path:
    """Writes each image as a PNG under `folder/images` and `folder/labels.csv` (`COLUMNS`;
    reuse_cells space-separated, edit as JSON), and `set.json` naming the references folder
    the works' images are in (by path: they are not copied). Returns the CSV's path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, pair in enumerate(pairs):
        name = f"images/{i:04d}-{re.sub(r'[^A-Za-z0-9_-]+', '_', pair.reference_id)}-{pair.label}.png"
        Image.fromarray(pair.image.pixels).save(folder / name, format="PNG", compress_level=1)
        rows.append({
            "reference_id": pair.reference_id, "image": name, "label": pair.label,
            "k": "" if pair.k is None else pair.k,
            "reuse_cells": "" if pair.reuse_cells is None else " ".join(str(c) for c in pair.reuse_cells),
            "source": pair.source, "edit": json.dumps(pair.edit, sort_keys=True) if pair.edit else "",
        })
    with open(folder / LABELS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    manifest = {"references": None if references is None else str(Path(references).resolve()), "pairs": len(rows)}
    (folder / SET_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return folder / LABELS_FILE


def read_labelled_set(path: str | Path) -> LabelledSet:
    """A labelled set: a folder with `labels.csv` (or the CSV itself) whose rows name
    reference_id, image (a path relative to the CSV) and label, and optionally `COLUMNS`'s
    others. The works' images are in the folder `set.json` names, else in `references/`
    beside the CSV when there is one."""
    path = Path(path)
    csv_file = path if path.is_file() else path / LABELS_FILE
    if not csv_file.is_file():
        raise ValueError(f"no labelled set at {path}: expected a folder with {LABELS_FILE} or a CSV file")
    folder = csv_file.parent
    return LabelledSet(tuple(read_labels_csv(csv_file)), folder, _references_of(folder))


def _references_of(folder: Path) -> Path | None:
    manifest = folder / SET_FILE
    if manifest.is_file():
        named = json.loads(manifest.read_text()).get("references")
        if named:
            return (folder / named).resolve()
    return folder / "references" if (folder / "references").is_dir() else None


def read_labels_csv(csv_file: str | Path) -> list[LabelledPair]:
    """The pairs of a labels CSV (see `read_labelled_set`); a row that cannot be a pair is a
    ValueError naming its line."""
    csv_file = Path(csv_file)
    with open(csv_file, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{csv_file}: missing column(s) {', '.join(missing)}; a labels CSV needs {', '.join(REQUIRED_COLUMNS)}")
        pairs = [_row_pair(row, csv_file, line) for line, row in enumerate(reader, start=2)]
    if not pairs:
        raise ValueError(f"{csv_file}: no labelled pairs")
    return pairs


def _edit(text: str) -> dict[str, Any]:
    edit = json.loads(text) if text else {}
    if not isinstance(edit, dict):
        raise ValueError(f"edit must be a JSON object, got {text!r}")
    return edit


def _row_pair(row: Mapping[str, str | None], csv_file: Path, line: int) -> LabelledPair:
    where = f"{csv_file} line {line}"
    value = {c: (row.get(c) or "").strip() for c in COLUMNS}
    if not value["reference_id"]:
        raise ValueError(f"{where}: empty reference_id")
    if value["label"] not in LABELS:
        raise ValueError(f"{where}: label {value['label']!r} is not one of {', '.join(LABELS)}")
    image_file = csv_file.parent / value["image"]
    if not value["image"] or not image_file.is_file():
        raise ValueError(f"{where}: image {value['image']!r} not found at {image_file}")
    try:
        image = decode_image(image_file.read_bytes(), value["image"])
        return LabelledPair(
            value["reference_id"], image, value["label"],
            k=int(value["k"]) if value["k"] else None,
            reuse_cells=tuple(int(c) for c in value["reuse_cells"].split()) if value["reuse_cells"] else None,
            source=value["source"] or "human", edit=_edit(value["edit"]),
        )
    except (InvalidImage, ValueError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(f"{where}: {error}") from error


# -- scoring the pairs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PairScores:
    """Per pair, in the order of the pairs: the label, k (-1: none), and each score."""

    labels: np.ndarray  # (n,) str
    ks: np.ndarray  # (n,) int
    recognition_similarity: np.ndarray
    recognized: np.ndarray  # bool
    vr: np.ndarray
    baselines: dict[str, np.ndarray]  # name -> (n,), pHash as distance

    @property
    def vi(self) -> np.ndarray:
        return 1.0 - self.vr

    @property
    def crt(self) -> np.ndarray:
        """CRA x VI of each image alone (`aggregation.crt` of a one-image set)."""
        return self.recognized * self.vi

    def metrics(self) -> dict[str, np.ndarray]:
        """Every metric by name, pHash as a distance (read "lower")."""
        return {"CRA": self.recognized.astype(float), "VR": self.vr, "VI": self.vi, "CRT": self.crt, **self.baselines}


def score_pairs(recognition_encoder: Encoder, realization_encoder: Encoder, references: Sequence[Reference],
                pairs: Sequence[LabelledPair], thresholds: Thresholds, *, cache: EmbeddingCache | None = None,
                web_size: Mapping[str, np.ndarray] | None = None, progress: Progress | None = None) -> PairScores:
    """Scores every pair as `Scorer` scores a static reference, and by the baselines against
    the works' `web_sizes` (made here where not given)."""
    by_id = _references_by_id(references, pairs)
    works = {p.reference_id for p in pairs}
    if web_size is None or not works <= set(web_size):
        web_size = web_sizes(references, works)
    scorer = Scorer(recognition_encoder, realization_encoder, cache if cache is not None else EmbeddingCache())
    similarity, recognized, vr = np.zeros(len(pairs)), np.zeros(len(pairs), bool), np.zeros(len(pairs))
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.reference_id, []).append(i)
    for n, (reference_id, indices) in enumerate(groups.items()):
        if progress is not None:
            progress(f"[{n + 1}/{len(groups)}] {reference_id}: {len(indices)} pairs")
        prepared = scorer.prepare(by_id[reference_id], Imagery.STATIC)
        scored = scorer.score_batch(prepared, [pairs[i].image for i in indices], thresholds.recognition_static, thresholds.reuse)
        for i, s in zip(indices, scored):
            similarity[i], recognized[i], vr[i] = s.recognition_similarity, s.recognized, s.vr
    return PairScores(
        labels=np.array([p.label for p in pairs]),
        ks=np.array([-1 if p.k is None else p.k for p in pairs]),
        recognition_similarity=similarity, recognized=recognized, vr=vr,
        baselines=_baselines(recognition_encoder, realization_encoder, web_size, pairs),
    )


def _references_by_id(references: Sequence[Reference], pairs: Sequence[LabelledPair]) -> dict[str, Reference]:
    by_id = {r.reference_id: r for r in references}
    unknown = sorted({p.reference_id for p in pairs} - set(by_id))
    if unknown:
        raise ValueError(f"pairs name works not among the {len(by_id)} references: {', '.join(unknown[:5])}"
                         + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    return by_id


def _baselines(recognition_encoder: Encoder, realization_encoder: Encoder, web_size: Mapping[str, np.ndarray],
               pairs: Sequence[LabelledPair]) -> dict[str, np.ndarray]:
    """`baselines.global_cosines`, `phash_distances` and `ssims` of (pair image, its work at
    web size); a work's web-size image is one array for all its pairs, so they embed, hash and
    resize it once."""
    images, canonical = [p.image for p in pairs], [web_size[p.reference_id] for p in pairs]
    names = global_cosine_names(recognition_encoder, realization_encoder)
    recognition_cosine = baselines.global_cosines(recognition_encoder, images, canonical)
    same = realization_encoder.identity == recognition_encoder.identity
    return {
        names[0]: recognition_cosine,
        names[1]: recognition_cosine if same else baselines.global_cosines(realization_encoder, images, canonical),
        PHASH: baselines.phash_distances(images, canonical).astype(float),
        SSIM: baselines.ssims(images, canonical),
    }


def global_cosine_names(recognition_encoder: Encoder, realization_encoder: Encoder) -> tuple[str, str]:
    """The baselines' names: "global CLIP cosine" and "global DINO cosine" for the paper's
    encoders, else the encoder's name and its role.

    >>> from services.scorer.encoders.classical import ClassicalEncoder
    >>> global_cosine_names(ClassicalEncoder(None), ClassicalEncoder(None))
    ('global classical cosine (recognition)', 'global classical cosine (realization)')
    """
    names = [_family_name(recognition_encoder), _family_name(realization_encoder)]
    if names[0] is None or names[1] is None or names[0] == names[1]:
        names = [f"global {recognition_encoder.name} cosine (recognition)", f"global {realization_encoder.name} cosine (realization)"]
    return names[0], names[1]


def _family_name(encoder: Encoder) -> str | None:
    for family in ("CLIP", "DINO", "SigLIP"):
        if family.lower() in encoder.name.lower():
            return f"global {family} cosine"
    return None


# -- the measures ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricRoc:
    auc: float
    fpr: list[float]
    tpr: list[float]
    direction: str


@dataclass(frozen=True)
class TaskResult:
    positive: list[str]
    negative: list[str]
    metrics: dict[str, MetricRoc]


@dataclass(frozen=True)
class Confusion:
    labels: list[str]  # rows: true labels
    predicted: list[str]  # columns
    counts: list[list[int]]


def task_directions(baseline_names: Sequence[str]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]]:
    """Each task: positive labels, negative labels, and the direction in which each metric
    points to the positive class (see the module's docstring)."""
    similar = {name: (LOWER if name == PHASH else HIGHER) for name in baseline_names}
    return {
        "replica vs unrelated": (("replica",), ("unrelated",), {"CRA": HIGHER, "VR": HIGHER, "VI": LOWER, **similar}),
        "replica vs transformation": (("replica",), ("transformation",),
                                      {"CRA": HIGHER, "VR": HIGHER, "VI": LOWER, "CRT": LOWER, **similar}),
        "evoked vs unrelated": (("replica", "transformation"), ("unrelated",),
                                {"CRA": HIGHER, "VR": HIGHER, "VI": LOWER, **similar}),
    }


def metric_roc(positives: np.ndarray, negatives: np.ndarray, direction: str) -> MetricRoc:
    """ROC AUC and curve of a metric read in `direction` ("lower": small values point to the
    positive class).

    >>> metric_roc(np.array([3.0, 10.0]), np.array([20.0, 10.0]), "lower").auc
    0.875
    """
    sign = {HIGHER: 1.0, LOWER: -1.0}[direction]
    fpr, tpr = roc_curve(sign * positives, sign * negatives)
    return MetricRoc(round(roc_auc(sign * positives, sign * negatives), 6), _rounded(fpr), _rounded(tpr), direction)


def tasks(scores: PairScores) -> dict[str, TaskResult]:
    """ROC per task and metric; a task without pairs of both sides is left out."""
    metrics = scores.metrics()
    out = {}
    for name, (positive, negative, directions) in task_directions(list(scores.baselines)).items():
        is_positive, is_negative = np.isin(scores.labels, positive), np.isin(scores.labels, negative)
        if is_positive.any() and is_negative.any():
            out[name] = TaskResult(list(positive), list(negative), {
                metric: metric_roc(metrics[metric][is_positive], metrics[metric][is_negative], direction)
                for metric, direction in directions.items()
            })
    return out


def predict(recognized: np.ndarray, vr: np.ndarray, replica_vr: float = REPLICA_VR) -> np.ndarray:
    """The class (recognized, VR) say: not recognized -> unrelated; recognized and VR above
    `replica_vr` -> replica; recognized otherwise -> transformation.

    >>> predict(np.array([False, True, True]), np.array([0.9, 0.75, 0.5])).tolist()
    ['unrelated', 'replica', 'transformation']
    """
    recognized = np.asarray(recognized, bool)
    return np.where(~recognized, "unrelated", np.where(np.asarray(vr) > replica_vr, "replica", "transformation"))


def confusion(scores: PairScores, replica_vr: float = REPLICA_VR) -> Confusion:
    """Rows: the true labels present (in `LABELS` order); columns: `PREDICTED`."""
    predicted = predict(scores.recognized, scores.vr, replica_vr)
    labels = [label for label in LABELS if (scores.labels == label).any()]
    counts = [[int(((scores.labels == label) & (predicted == p)).sum()) for p in PREDICTED] for label in labels]
    return Confusion(labels, list(PREDICTED), counts)


def partial_reuse(scores: PairScores) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """VR of the composites per k against k/16, and how it tracks k: the mean |VR - k/16| and
    Spearman's rho of (k, VR) over composites (None when undefined)."""
    composite = (scores.labels == "partial") & (scores.ks >= 0)
    ks, vr = scores.ks[composite], scores.vr[composite]
    rows = [{"k": int(k), "n": int((ks == k).sum()), "vr_mean": round(float(vr[ks == k].mean()), 6),
             "vr_expected": k / CELLS} for k in np.unique(ks)]
    error = round(float(np.abs(vr - ks / CELLS).mean()), 6) if ks.size else None
    rho = None
    if ks.size > 1 and np.ptp(ks) > 0 and np.ptp(vr) > 0:
        from scipy.stats import spearmanr  # here: a reused validation never computes it (importing takes ~1 s)

        rho = round(float(spearmanr(ks, vr).statistic), 6)
    return rows, {"mean_abs_error": error, "spearman": rho}


def transformation_kinds(pairs: Sequence[LabelledPair], scores: PairScores) -> dict[str, dict[str, float]]:
    """Per kind of generated transformation: how many, the share recognized, the mean VR."""
    kinds = np.array([p.edit.get("transformation", "") if p.label == "transformation" else "" for p in pairs])
    return {str(kind): {"n": int((kinds == kind).sum()), "recognized": round(float(scores.recognized[kinds == kind].mean()), 6),
                        "vr_mean": round(float(scores.vr[kinds == kind].mean()), 6)}
            for kind in np.unique(kinds) if kind}


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]


# -- validate ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Validation:
    encoders: dict[str, str]
    thresholds: Thresholds
    seed: int
    pairs: tuple[LabelledPair, ...]
    scores: PairScores
    tasks: dict[str, TaskResult]
    confusion: Confusion
    partial: list[dict[str, Any]]
    partial_tracking: dict[str, float | None]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pairs(self) -> dict[str, int]:
        return {label: int((self.scores.labels == label).sum()) for label in LABELS}

    def to_json(self) -> dict[str, Any]:
        """The layout the report reads (module docstring: tasks, directions)."""
        return {
            "encoders": dict(self.encoders),
            "thresholds": asdict(self.thresholds),
            "seed": self.seed,
            "n_pairs": self.n_pairs,
            "tasks": {name: asdict(task) for name, task in self.tasks.items()},
            "confusion": asdict(self.confusion),
            "partial": [dict(row) for row in self.partial],
            "partial_tracking": dict(self.partial_tracking),
            "transformation_kinds": transformation_kinds(self.pairs, self.scores),
            "provenance": self.provenance,
        }


def validate(
    recognition_encoder: Encoder,
    realization_encoder: Encoder,
    references: Sequence[Reference],
    *,
    thresholds: Thresholds | None = None,
    seed: int = 0,
    per_class: int = DEFAULT_PER_CLASS,
    partial_ks: Sequence[int] = PARTIAL_KS,
    labelled: Sequence[LabelledPair] = (),
    generate: bool = True,
    replica_vr: float = REPLICA_VR,
    cache: EmbeddingCache | None = None,
    source: str | None = None,
    progress: Progress | None = None,
) -> Validation:
    """Scores a labelled set, generated from `references` (unless `generate` is False) with
    `labelled` pairs merged in, and measures how each metric separates its classes.
    `thresholds` default to the encoders' calibrated ones (recognition from the recognition
    encoder, reuse from the realization encoder).

    >>> from services.scorer.encoders.classical import ClassicalEncoder
    >>> rng = np.random.default_rng(0)
    >>> works = [Reference(f"w{i}", (DecodedImage("1.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), str(i)),))
    ...          for i in range(3)]
    >>> v = validate(ClassicalEncoder(None), ClassicalEncoder(None), works, per_class=1, partial_ks=(8,))
    >>> v.n_pairs, sum(map(sum, v.confusion.counts))
    ({'replica': 3, 'partial': 3, 'transformation': 3, 'unrelated': 3}, 12)
    """
    if thresholds is None:
        thresholds = Thresholds(recognition_encoder.thresholds.recognition_static,
                                recognition_encoder.thresholds.recognition_dynamic, realization_encoder.thresholds.reuse)
    if not 0.0 <= replica_vr < 1.0:
        raise ValueError(f"replica_vr must lie in [0, 1), got {replica_vr}")
    # The edits and the baselines both start from each work's web-size image: made once.
    web_size = web_sizes(references) if generate else None
    pairs = (labelled_pairs(references, seed=seed, per_class=per_class, partial_ks=partial_ks, web_size=web_size)
             if generate else []) + list(labelled)
    if not pairs:
        raise ValueError("no pairs to validate: generate some or give a labelled set")
    scores = score_pairs(recognition_encoder, realization_encoder, references, pairs, thresholds, cache=cache,
                         web_size=web_size, progress=progress)
    partial, tracking = partial_reuse(scores)
    provenance = _provenance(recognition_encoder, realization_encoder, references, pairs, generate,
                             {"seed": seed, "per_class": per_class, "partial_ks": list(partial_ks)}, replica_vr, source)
    return Validation(
        encoders={"recognition": recognition_encoder.name, "realization": realization_encoder.name},
        thresholds=thresholds, seed=seed, pairs=tuple(pairs), scores=scores, tasks=tasks(scores), confusion=confusion(scores, replica_vr),
        partial=partial, partial_tracking=tracking, provenance=provenance,
    )


def _provenance(recognition_encoder: Encoder, realization_encoder: Encoder, references: Sequence[Reference],
                pairs: Sequence[LabelledPair], generate: bool, generation: dict[str, Any], replica_vr: float,
                source: str | None) -> dict[str, Any]:
    used = sorted({p.reference_id for p in pairs})
    hashes = sorted(image.content_hash for r in references if r.reference_id in used for image in r.images)
    pair_hashes = "".join(p.image.content_hash for p in pairs)
    return {
        "encoder_identity": {"recognition": recognition_encoder.identity, "realization": realization_encoder.identity},
        "imagery": Imagery.STATIC.value,
        "references": {"source": source, "works": used, "images": len(hashes),
                       "content_digest": hashlib.sha256("".join(hashes).encode()).hexdigest()[:16]},
        "pairs_digest": hashlib.sha256(pair_hashes.encode()).hexdigest()[:16],
        "sources": dict(Counter(p.source for p in pairs)),
        "generated": {**generation, "replica_recipe": edits.replica_recipe(),
                      "transformation_recipe": edits.transformation_recipe()} if generate else None,
        "replica_vr": replica_vr,
        "prediction": "not recognized: unrelated; recognized and VR > replica_vr: replica; else transformation",
        "baseline_reference": f"the canonical image scaled to at most {edits.REPLICA_MAX_SIDE} px (what the edits start from)",
        "grid": list(GRID),
    }


# -- what a validation depends on ------------------------------------------------------------------
# The modules whose code computes a validation, besides the encoders package (all of whose
# .py and .json files count: classical.json holds the classical encoder's background).
VALIDATION_CODE = (
    "services.scorer.validation", "services.scorer.edits", "services.scorer.baselines", "services.scorer.crops",
    "services.scorer.recognition", "services.scorer.realization", "services.scorer.scoring",
    "services.scorer.aggregation", "services.scorer.calibration", "services.scorer.references", "services.common.images",
)
ENCODERS_PACKAGE = "services.scorer.encoders"
# Libraries whose arithmetic or codecs the values go through (resizing, JPEG, convolutions).
VALIDATION_LIBRARIES = ("numpy", "scipy", "torch", "kornia", "PIL")


def code_fingerprint() -> str:
    """sha256 over the source of `VALIDATION_CODE` and of the encoders package, so that a
    validation computed by other code is never taken for this code's."""
    digest = hashlib.sha256()
    for path in _code_files():
        digest.update(f"{path.parent.name}/{path.name}:{path.stat().st_size}:".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _code_files() -> list[Path]:
    files = [Path(importlib.import_module(name).__file__) for name in VALIDATION_CODE]
    encoders = Path(importlib.import_module(ENCODERS_PACKAGE).__file__).parent
    return files + sorted(p for p in encoders.iterdir() if p.suffix in (".py", ".json"))


def validation_key(recognition_encoder: Encoder, realization_encoder: Encoder, references: Sequence[Reference],
                   thresholds: Thresholds, *, seed: int = 0, per_class: int = DEFAULT_PER_CLASS,
                   partial_ks: Sequence[int] = PARTIAL_KS, replica_vr: float = REPLICA_VR) -> str:
    """sha256 over everything `validate` of a generated set (no labelled pairs) depends on:
    the encoders (name, identity: weights' fingerprint, preprocessing, dtype), the thresholds,
    the set's parameters, each work's id and images' content hashes in the order given (the
    order of the pairs, which the provenance's digest follows), the code and the libraries'
    versions. Not the references' folder: the same images elsewhere give the same result."""
    ingredients = {
        # The identity names the weights by fingerprint, not by folder (which varies by machine).
        "encoders": {role: {"name": e.name, "identity": e.identity}
                     for role, e in (("recognition", recognition_encoder), ("realization", realization_encoder))},
        "thresholds": asdict(thresholds),
        "set": {"seed": seed, "per_class": per_class, "partial_ks": [int(k) for k in partial_ks], "replica_vr": replica_vr},
        "references": [[r.reference_id, [image.content_hash for image in r.images]] for r in references],
        "code": code_fingerprint(),
        "libraries": {name: importlib.import_module(name).__version__ for name in VALIDATION_LIBRARIES},
    }
    return hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()


def format_validation(v: Validation) -> str:
    """A table of ROC AUC per metric and task, the confusion and the composites' VR per k."""
    from services.scorer.results import format_table

    document = v.to_json()
    task_names = list(document["tasks"])
    metrics = list(dict.fromkeys(m for task in document["tasks"].values() for m in task["metrics"]))
    auc_rows = []
    for metric in metrics:
        cells = []
        for name in task_names:
            roc = document["tasks"][name]["metrics"].get(metric)
            cells.append("" if roc is None else f"{roc['auc']:.3f} {'+' if roc['direction'] == HIGHER else '-'}")
        auc_rows.append([metric, *cells])
    confusion_rows = [[label, *counts] for label, counts in zip(v.confusion.labels, v.confusion.counts)]
    partial_rows = [[row["k"], row["n"], row["vr_mean"], row["vr_expected"]] for row in v.partial]
    tracking = v.partial_tracking
    return "\n".join([
        f"encoders: recognition={v.encoders['recognition']} (tau={v.thresholds.recognition_static:.3f})  "
        f"realization={v.encoders['realization']} (tau_reuse={v.thresholds.reuse:.3f})  seed {v.seed}",
        "pairs: " + ", ".join(f"{label} {n}" for label, n in v.n_pairs.items()),
        "",
        "ROC AUC (+: higher values point to the positive class, -: lower values do)",
        format_table(["metric", *task_names], auc_rows),
        "",
        f"confusion at the thresholds (rows: true, columns: predicted; replica when recognized and VR > "
        f"{v.provenance.get('replica_vr', REPLICA_VR)})",
        format_table(["true \\ predicted", *v.confusion.predicted], confusion_rows),
        "",
        "partial reuse: VR of composites taking k of 16 cells from the work",
        format_table(["k", "n", "VR mean", "k/16"], partial_rows) if partial_rows else "(no composites)",
        f"mean |VR - k/16| = {_maybe(tracking['mean_abs_error'])}   Spearman(k, VR) = {_maybe(tracking['spearman'])}",
        *(["", "transformations by kind: " + "; ".join(
            f"{kind} n={row['n']} recognized={row['recognized']:.2f} VR={row['vr_mean']:.2f}"
            for kind, row in document["transformation_kinds"].items())] if document["transformation_kinds"] else []),
    ])


def _maybe(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# -- the `iconicity validate` command ----------------------------------------------------------------
def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    from services.cli import add_encoder_arguments

    parser.add_argument("--references", required=True, type=Path, metavar="DIR",
                        help="a references folder: catalog.json and a subfolder of images per work")
    parser.add_argument("--encoder", metavar="NAME", help="one encoder in both roles (else --recognition-encoder/--realization-encoder)")
    add_encoder_arguments(parser)
    parser.add_argument("--thresholds", type=Path, metavar="FILE.json",
                        help="thresholds from a calibration file (`iconicity calibrate --out`) instead of the encoders' own")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="a labelled set (a folder with labels.csv, or the CSV) merged into the generated pairs")
    parser.add_argument("--only-data", action="store_true", help="score only the pairs of --data, generate none")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated pairs (default: 0)")
    parser.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS, metavar="N",
                        help=f"replicas, transformations and other works per work (default: {DEFAULT_PER_CLASS})")
    parser.add_argument("--partial-k", type=int, nargs="+", default=list(PARTIAL_KS), metavar="K",
                        help=f"one composite per work for each k of 16 cells (default: {' '.join(map(str, PARTIAL_KS))})")
    parser.add_argument("--replica-vr", type=float, default=REPLICA_VR, metavar="V",
                        help=f"a recognized image with VR above V is predicted a replica (default: {REPLICA_VR})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the validation as JSON (what `iconicity report` shows)")
    parser.add_argument("--write-set", type=Path, metavar="DIR", help="also write the scored pairs as a labelled set")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run_validate(args: argparse.Namespace) -> int:
    from services.cli import build_scorer

    if args.encoder is not None:
        if args.recognition_encoder or args.realization_encoder:
            raise ValueError("give --encoder or --recognition-encoder/--realization-encoder, not both")
        args.recognition_encoder = args.realization_encoder = args.encoder
    if args.only_data and args.data is None:
        raise ValueError("--only-data needs --data DIR")
    entries = load_catalog(args.references)
    if len(entries) < 2:
        raise ValueError(f"validation needs at least two works in {args.references}, found {len(entries)}")
    references = [entry.load() for entry in entries]
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    labelled = read_labelled_set(args.data).pairs if args.data is not None else ()
    scorer = build_scorer(args)
    validation = validate(scorer.recognition_encoder, scorer.realization_encoder, references,
                          thresholds=_read_thresholds(args.thresholds), seed=args.seed, per_class=args.per_class,
                          partial_ks=args.partial_k, labelled=labelled, generate=not args.only_data,
                          replica_vr=args.replica_vr, cache=scorer.cache, source=str(args.references), progress=progress)
    if args.write_set is not None:
        write_labelled_set(validation.pairs, args.write_set, args.references)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(validation.to_json(), indent=1) + "\n")
    print(format_validation(validation))
    for what, path in (("labelled set", args.write_set), ("JSON", args.json)):
        if path is not None:
            print(f"{what} written to {path}")
    return 0


def _read_thresholds(path: Path | None) -> Thresholds | None:
    if path is None:
        return None
    try:
        return Thresholds(**json.loads(path.read_text())["thresholds"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a calibration file with recognition_static, recognition_dynamic and reuse "
                         f"thresholds ({type(error).__name__}: {error})") from error
