"""Results keyed by content: what a killed benchmark has already done, and its result files.

A generated image is named by everything it depends on (`GenerationKey`): model name,
pipeline and weights revision, prompt, negative prompt, seed, steps, guidance, size,
scheduler, dtype and extra call arguments. A score is named by the image's key and
everything the scoring depends on (`ScoreContext`): the reference id and the SHA-256 of its
images, the encoders' identities, the requested thresholds, the imagery and the CRT variant.

`ResultStore(root)` keeps them durably::

    ROOT/results.sqlite          images and scores, one row per key (PRIMARY KEY: no duplicates)
    ROOT/images/ab/abcd....png   generated images, named by the SHA-256 of their bytes

An image's file is written (temporary file, fsync, rename) before its row is committed, so a
row always has its file; a run killed at any point and started again asks `missing_images`
and `missing_scores` for what is left and computes only that. Writing a key twice keeps the
first row (`INSERT OR IGNORE`), so nothing is counted twice.

Per child run (model x perturbation) the results are two Parquet files: `IMAGE_COLUMNS` (one
row per generated image and its score) and `REFERENCE_COLUMNS` (CRA, VR, VI, CRT per
reference over its n images); `cell_metrics` reduces the latter to the run's metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from flows.spec import canonical_json
from services.common.files import write_atomically

# Part of every key: bump it when what a key covers changes, and old results stop matching.
KEY_VERSION = 1


def _digest(kind: str, content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"kind": kind, "version": KEY_VERSION, **content}).encode()).hexdigest()


@dataclass(frozen=True)
class GenerationKey:
    """What a generated image depends on.

    >>> a = GenerationKey("tiny-sd", "tiny:tiny-sd", None, "The Scream", "", 0, 4, 7.5, 64, 64, None, "float32")
    >>> a.key() == GenerationKey(**{**asdict(a)}).key(), a.key() == GenerationKey(**{**asdict(a), "seed": 1}).key()
    (True, False)
    """

    model: str
    pipeline: str
    revision: str | None
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    height: int
    width: int
    scheduler: str | None
    dtype: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # call kwargs, weights variant

    @classmethod
    def from_config(cls, config: Mapping[str, Any], prompt: str, seed: int, negative_prompt: str = "") -> GenerationKey:
        """From a model's whole configuration (`BenchmarkSpec.model_configs()`, the
        generator's `ModelConfig.to_dict()`)."""
        extra = dict(config.get("call_kwargs") or {})
        if config.get("variant"):
            extra["variant"] = config["variant"]
        return cls(
            model=config["name"], pipeline=config.get("pipeline") or config["name"], revision=config.get("revision"),
            prompt=prompt, negative_prompt=negative_prompt, seed=int(seed), steps=int(config["steps"]),
            guidance=float(config["guidance"]), height=int(config["height"]), width=int(config["width"]),
            scheduler=config.get("scheduler"), dtype=str(config["dtype"]), extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        data["guidance"] = float(self.guidance)
        return data

    def key(self) -> str:
        return _digest("image", self.to_dict())


@dataclass(frozen=True)
class ScoreContext:
    """What scoring an image against a reference depends on, besides the image.
    Thresholds are the requested ones (None: the encoder's calibrated one, which its
    identity pins)."""

    reference_id: str
    reference_images: tuple[str, ...]  # SHA-256 of the reference's images, canonical first
    recognition_encoder: str  # encoder identities (weights, preprocessing, dtype)
    realization_encoder: str
    imagery: str  # static | dynamic, as scored
    recognition_threshold: float | None = None
    reuse_threshold: float | None = None
    crt_variant: str = "recognized_images"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reference_images"] = list(self.reference_images)
        return data

    def key(self) -> str:
        return _digest("score-context", self.to_dict())


def score_key(image_key: str, context: ScoreContext | str) -> str:
    """The key of one image's score in one context (a `ScoreContext` or its key)."""
    context_key = context if isinstance(context, str) else context.key()
    return _digest("score", {"image": image_key, "context": context_key})


@dataclass(frozen=True)
class GeneratedImage:
    """A generated image as stored: its key, the SHA-256 of its PNG bytes and how it was made."""

    key: str
    sha256: str
    width: int
    height: int
    model: str
    prompt: str
    seed: int
    seconds: float = 0.0  # generation time attributed to this image
    settings: dict[str, Any] = field(default_factory=dict)  # the GenerationKey's fields
    created_at: float = 0.0


@dataclass(frozen=True)
class ScoreRecord:
    """One image's score against one reference, as stored (the scorer's per-image fields,
    with the thresholds it applied)."""

    key: str
    image_key: str
    context_key: str
    reference_id: str
    recognition_similarity: float
    recognized: bool
    vr: float
    vi: float
    reuse_map: tuple[int, ...]  # the 4x4 map of r_ik, row-major
    crop_similarity_max: float
    crop_similarity_mean: float
    crop_similarity_p90: float
    recognition_threshold: float
    reuse_threshold: float
    recognition_encoder: str = ""
    realization_encoder: str = ""
    n_references_kept: int = 0
    seconds: float = 0.0  # scoring time attributed to this image
    created_at: float = 0.0

    @classmethod
    def from_image_score(cls, score: Any, *, image_key: str, context: ScoreContext | str, reference_id: str,
                         recognition_threshold: float, reuse_threshold: float, recognition_encoder: str = "",
                         realization_encoder: str = "", n_references_kept: int = 0, seconds: float = 0.0) -> ScoreRecord:
        """From the scorer's `ImageScore` (or one image of `ScoreResult.to_dict()["images"]`)."""
        get = score.get if isinstance(score, Mapping) else (lambda name: getattr(score, name))
        reuse_map = get("reuse_map")
        context_key = context if isinstance(context, str) else context.key()
        return cls(
            key=score_key(image_key, context_key), image_key=image_key, context_key=context_key, reference_id=reference_id,
            recognition_similarity=float(get("recognition_similarity")), recognized=bool(get("recognized")),
            vr=float(get("vr")), vi=float(get("vi")), reuse_map=tuple(int(v) for row in reuse_map for v in _cells(row)),
            crop_similarity_max=float(get("crop_similarity_max")), crop_similarity_mean=float(get("crop_similarity_mean")),
            crop_similarity_p90=float(get("crop_similarity_p90")), recognition_threshold=float(recognition_threshold),
            reuse_threshold=float(reuse_threshold), recognition_encoder=recognition_encoder,
            realization_encoder=realization_encoder, n_references_kept=int(n_references_kept), seconds=float(seconds),
        )


def _cells(row: Any) -> Iterable[Any]:
    return row if isinstance(row, (list, tuple, np.ndarray)) else (row,)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    key TEXT PRIMARY KEY,
    image_key TEXT NOT NULL,
    context_key TEXT NOT NULL,
    reference_id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS scores_by_image ON scores (image_key);
"""
_CHUNK = 500  # keys per IN (...) query, under SQLite's variable limit


class ResultStore:
    """Generated images and scores under `root`, durable and keyed by content. Safe to
    share between threads; several processes may use one root (SQLite locking, WAL)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "results.sqlite", check_same_thread=False, isolation_level=None,
                                   timeout=60.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('key_version', ?)", (str(KEY_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- images --------------------------------------------------------------------------
    def image_path(self, sha256: str) -> Path:
        return self.root / "images" / sha256[:2] / f"{sha256}.png"

    def put_image(self, key: str, png: bytes, *, width: int, height: int, model: str, prompt: str, seed: int,
                  seconds: float = 0.0, settings: Mapping[str, Any] | None = None) -> bool:
        """Stores a generated image: its file, then its row. True if the key was new; a key
        already stored keeps its first row. Where a stored image's file was lost, the new
        bytes take its place (and, if they differ, the old bytes' scores are dropped)."""
        if not png:
            raise ValueError(f"image {key}: no bytes")
        sha256 = hashlib.sha256(png).hexdigest()
        record = GeneratedImage(key, sha256, int(width), int(height), model, prompt, int(seed), float(seconds),
                                dict(settings or {}), time.time())
        existing = self.get_image(key)
        if existing is not None and self.image_path(existing.sha256).exists():
            return False
        path = self.image_path(sha256)
        if not path.exists():
            write_atomically(path, png)
        with self._lock:
            if existing is None:
                cursor = self._db.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?)",
                                          (key, sha256, json.dumps(asdict(record)), record.created_at))
                return cursor.rowcount == 1
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE images SET sha256 = ?, data = ?, created_at = ? WHERE key = ?",
                                 (sha256, json.dumps(asdict(record)), record.created_at, key))
                if existing.sha256 != sha256:
                    self._db.execute("DELETE FROM scores WHERE image_key = ?", (key,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return True

    def get_image(self, key: str) -> GeneratedImage | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM images WHERE key = ?", (key,)).fetchone()
        return _image(row[0]) if row else None

    def get_images(self, keys: Iterable[str]) -> dict[str, GeneratedImage]:
        return {k: _image(v) for k, v in self._select("SELECT key, data FROM images WHERE key IN ({})", keys)}

    def image_bytes(self, key: str) -> bytes:
        record = self.get_image(key)
        if record is None:
            raise KeyError(f"no generated image {key}")
        return self.image_path(record.sha256).read_bytes()

    def missing_images(self, keys: Iterable[str]) -> list[str]:
        """The keys (in order, each once) without a stored image and its file."""
        keys = list(dict.fromkeys(keys))
        stored = self.get_images(keys)
        return [k for k in keys if k not in stored or not self.image_path(stored[k].sha256).exists()]

    # -- scores --------------------------------------------------------------------------
    def put_scores(self, records: Iterable[ScoreRecord]) -> int:
        """Stores scores in one transaction; returns how many keys were new."""
        now = time.time()
        rows = []
        for record in records:
            data = {**asdict(record), "created_at": record.created_at or now}
            rows.append((record.key, record.image_key, record.context_key, record.reference_id, json.dumps(data), now))
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO scores VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._db.total_changes - before

    def get_scores(self, keys: Iterable[str]) -> dict[str, ScoreRecord]:
        return {k: _score(v) for k, v in self._select("SELECT key, data FROM scores WHERE key IN ({})", keys)}

    def missing_scores(self, keys: Iterable[str]) -> list[str]:
        keys = list(dict.fromkeys(keys))
        stored = {k for k, _ in self._select("SELECT key, 1 FROM scores WHERE key IN ({})", keys)}
        return [k for k in keys if k not in stored]

    # -- bookkeeping ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._lock:
            images = self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            scores = self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        return {"images": images, "scores": scores}

    def _select(self, query: str, keys: Iterable[str]) -> Iterator[tuple[str, Any]]:
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            with self._lock:
                rows = self._db.execute(query.format(",".join("?" * len(chunk))), chunk).fetchall()
            yield from rows


def _image(data: str) -> GeneratedImage:
    return GeneratedImage(**json.loads(data))


def _score(data: str) -> ScoreRecord:
    values = json.loads(data)
    values["reuse_map"] = tuple(values["reuse_map"])
    known = {f.name for f in fields(ScoreRecord)}
    return ScoreRecord(**{k: v for k, v in values.items() if k in known})


# -- result files ------------------------------------------------------------------------

# Per-image rows of a child run: (column, pyarrow type name, meaning).
IMAGE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "string", "the model's name in the benchmark"),
    ("perturbation", "string", "original, synonym, literal or a custom name"),
    ("reference_id", "string", "QID, or slug where the work has none"),
    ("imagery", "string", "static or dynamic, as scored"),
    ("prompt", "string", "the prompt text"),
    ("image_index", "int64", "j: the image's position among the prompt's images"),
    ("seed", "int64", "the generator seed of the image"),
    ("image_key", "string", "GenerationKey.key()"),
    ("image_sha256", "string", "SHA-256 of the PNG bytes (the file's name in the store)"),
    ("score_key", "string", "score_key(image_key, context)"),
    ("recognition_similarity", "float64", "s_i = max_j cos(f(I_i), f(R_j))"),
    ("recognized", "bool", "s_i > recognition_threshold"),
    ("vr", "float64", "VR_i: share of the 16 crops reused"),
    ("vi", "float64", "VI_i = 1 - VR_i"),
    ("reuse_map", "list<int8>", "r_ik of the 4x4 grid, row-major"),
    ("crop_similarity_max", "float64", "max_k m_ik"),
    ("crop_similarity_mean", "float64", "mean_k m_ik"),
    ("crop_similarity_p90", "float64", "90th percentile of m_ik"),
    ("recognition_threshold", "float64", "tau applied"),
    ("reuse_threshold", "float64", "tau_reuse applied"),
    ("recognition_encoder", "string", "recognition encoder name"),
    ("realization_encoder", "string", "realization encoder name"),
    ("n_references_kept", "int64", "reference images kept for this imagery"),
    ("generation_seconds", "float64", "generation time attributed to the image"),
    ("scoring_seconds", "float64", "scoring time attributed to the image"),
)

# Per-reference rows of a child run.
REFERENCE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "string", "the model's name in the benchmark"),
    ("perturbation", "string", "the prompt variant"),
    ("reference_id", "string", "QID or slug"),
    ("imagery", "string", "static or dynamic"),
    ("prompt", "string", "the prompt text"),
    ("n_images", "int64", "n: images scored"),
    ("n_recognized", "int64", "images with s_i > tau"),
    ("cra", "float64", "CRA = n_recognized / n"),
    ("vr", "float64", "mean VR_i over the n images"),
    ("vi", "float64", "mean VI_i over the n images"),
    ("crt", "float64", "CRT of the benchmark's variant"),
    ("crt_recognized_images", "float64", "CRA x mean VI over recognized images (0 when none)"),
    ("crt_all_images", "float64", "CRA x mean VI over all images"),
    ("crt_variant", "string", "recognized_images or all_images"),
    ("mean_recognition_similarity", "float64", "mean s_i"),
    ("recognition_threshold", "float64", "tau applied"),
    ("reuse_threshold", "float64", "tau_reuse applied"),
)


def image_row(*, model: str, perturbation: str, reference_id: str, imagery: str, prompt: str, image_index: int,
              image: GeneratedImage, score: ScoreRecord) -> dict[str, Any]:
    """One row of `IMAGE_COLUMNS` from a stored image and its score."""
    if score.image_key != image.key:
        raise ValueError(f"score {score.key} is of image {score.image_key}, not {image.key}")
    return {
        "model": model, "perturbation": perturbation, "reference_id": reference_id, "imagery": imagery,
        "prompt": prompt, "image_index": int(image_index), "seed": image.seed, "image_key": image.key,
        "image_sha256": image.sha256, "score_key": score.key,
        "recognition_similarity": score.recognition_similarity, "recognized": score.recognized,
        "vr": score.vr, "vi": score.vi, "reuse_map": list(score.reuse_map),
        "crop_similarity_max": score.crop_similarity_max, "crop_similarity_mean": score.crop_similarity_mean,
        "crop_similarity_p90": score.crop_similarity_p90, "recognition_threshold": score.recognition_threshold,
        "reuse_threshold": score.reuse_threshold, "recognition_encoder": score.recognition_encoder,
        "realization_encoder": score.realization_encoder, "n_references_kept": score.n_references_kept,
        "generation_seconds": image.seconds, "scoring_seconds": score.seconds,
    }


def reference_rows(image_rows: Sequence[Mapping[str, Any]], crt_variant: str = "recognized_images") -> list[dict[str, Any]]:
    """`REFERENCE_COLUMNS` rows: the image rows grouped by (model, perturbation, reference),
    in order of first appearance; CRT by `services.scorer.aggregation.crt`."""
    from services.scorer.aggregation import CrtVariant, crt

    variant = CrtVariant(crt_variant)
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in image_rows:
        groups.setdefault((row["model"], row["perturbation"], row["reference_id"]), []).append(row)
    out = []
    for (model, perturbation, reference_id), rows in groups.items():
        flags = np.array([bool(r["recognized"]) for r in rows])
        vi = np.array([float(r["vi"]) for r in rows])
        by_variant = {v: crt(flags, vi, v) for v in CrtVariant}
        out.append({
            "model": model, "perturbation": perturbation, "reference_id": reference_id,
            "imagery": rows[0]["imagery"], "prompt": rows[0]["prompt"], "n_images": len(rows),
            "n_recognized": int(flags.sum()), "cra": float(flags.mean()),
            "vr": float(np.mean([float(r["vr"]) for r in rows])), "vi": float(vi.mean()),
            "crt": by_variant[variant], "crt_recognized_images": by_variant[CrtVariant.RECOGNIZED_IMAGES],
            "crt_all_images": by_variant[CrtVariant.ALL_IMAGES], "crt_variant": variant.value,
            "mean_recognition_similarity": float(np.mean([float(r["recognition_similarity"]) for r in rows])),
            "recognition_threshold": float(rows[0]["recognition_threshold"]),
            "reuse_threshold": float(rows[0]["reuse_threshold"]),
        })
    return out


METRICS = ("cra", "vr", "vi", "crt")


def cell_metrics(reference_rows: Sequence[Mapping[str, Any]], confidence: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> dict[str, float]:
    """A child run's metrics from its per-reference rows: CRA, VR, VI and CRT as the mean
    over references with percentile-bootstrap interval bounds (`<m>`, `<m>_ci_low`,
    `<m>_ci_high`), for all references and, where there are any, for the static and the
    dynamic ones (`static_<m>...`, `dynamic_<m>...`); counts `n_references`, `n_images`,
    `n_recognized` (also per imagery).

    >>> rows = [{"imagery": "static", "n_images": 2, "n_recognized": 1, "cra": 0.5, "vr": 0.25, "vi": 0.75, "crt": 0.375}]
    >>> m = cell_metrics(rows)
    >>> m["cra"], m["cra_ci_low"], m["n_images"], "dynamic_cra" in m
    (0.5, 0.5, 2.0, False)
    """
    from services.scorer.aggregation import bootstrap_mean_interval

    metrics: dict[str, float] = {}
    groups = [("", list(reference_rows))]
    for imagery in ("static", "dynamic"):
        rows = [r for r in reference_rows if r["imagery"] == imagery]
        if rows:
            groups.append((f"{imagery}_", rows))
    for prefix, rows in groups:
        metrics[f"{prefix}n_references"] = float(len(rows))
        metrics[f"{prefix}n_images"] = float(sum(int(r["n_images"]) for r in rows))
        metrics[f"{prefix}n_recognized"] = float(sum(int(r["n_recognized"]) for r in rows))
        if not rows:
            continue
        for name in METRICS:
            mean, low, high = bootstrap_mean_interval(np.array([float(r[name]) for r in rows]), confidence, resamples, seed)
            metrics[f"{prefix}{name}"] = mean
            metrics[f"{prefix}{name}_ci_low"] = low
            metrics[f"{prefix}{name}_ci_high"] = high
    return metrics


def _arrow_schema(columns: Sequence[tuple[str, str, str]]):
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
             "list<int8>": pa.list_(pa.int8())}
    return pa.schema([pa.field(name, types[kind], metadata={"description": meaning}) for name, kind, meaning in columns])


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | Path, columns: Sequence[tuple[str, str, str]]) -> Path:
    """Writes rows as Parquet with the fixed schema `columns` (an empty file keeps it),
    atomically (a temporary file renamed into place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(columns)
    names = [name for name, _, _ in columns]
    for i, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        if missing:
            raise ValueError(f"row {i} lacks {', '.join(missing)}")
    table = pa.Table.from_pylist([{n: row[n] for n in names} for row in rows], schema=schema)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_image_parquet(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    return write_rows(rows, path, IMAGE_COLUMNS)


def write_reference_parquet(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    return write_rows(rows, path, REFERENCE_COLUMNS)


def read_parquet(path: str | Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
