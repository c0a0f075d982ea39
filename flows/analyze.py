"""The `analyze` flow: after a benchmark, the validation of its encoders and its report.

Two Prefect tasks over a results folder (`iconicity run --out DIR`):

- `validate`: `services.scorer.validation.validate` with the benchmark's encoders and
  thresholds on the benchmark's own reference images (the harvested catalog, `DIR/catalog`,
  or the references folder given), written to `DIR/validation.json`. Skipped, with the reason
  in the report, where fewer than two works have images here or an encoder cannot load.
  Reused from `<cache>/validation/<key>.json` where the same encoders, thresholds, set, images
  and code were validated before (`services.scorer.validation.validation_key`);
- `report`: `flows.report.write_report`, the analyses of `flows.analysis` and the validation
  laid out in `DIR/report.html`, logged to the benchmark's MLflow parent run.

`iconicity run` runs it after the benchmark flow; `flows.analyze:analyze_flow` is the flow to
deploy beside the benchmark's. The work itself is in the plain functions `validation_for` and
`flows.report.write_report`; the flow only sequences them.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.spec import AUTO_ENCODER, BenchmarkSpec

if TYPE_CHECKING:  # the scorer's modules load torch: imported where used
    from services.scorer.encoders import Encoder, Thresholds
    from services.scorer.references import CatalogEntry

log = logging.getLogger("iconicity.flows")

VALIDATION_FILE = "validation.json"
VALIDATION_SEED = 0  # the labelled set's edits; recorded in validation.json
VALIDATION_CACHE = "validation"  # the folder of cached validations under the cache root


@dataclass(frozen=True)
class AnalysisResult:
    report: str  # the HTML file
    validation: str | None  # validation.json, None where validation was skipped
    validation_note: str | None = None  # why it was skipped


def _encoder_names(spec: BenchmarkSpec) -> tuple[str, str]:
    from services.scorer.encoders import default_encoders

    recognition, realization = default_encoders()
    return (recognition if spec.encoders.recognition == AUTO_ENCODER else spec.encoders.recognition,
            realization if spec.encoders.realization == AUTO_ENCODER else spec.encoders.realization)


def _run_references(folder: Path, references_dir: Path) -> list[CatalogEntry]:
    """The benchmark's works (references.json of the run) in the references folder's catalog,
    not loaded: `entry.load()` decodes their images."""
    from services.scorer.references import load_catalog

    wanted = {r["id"] for r in json.loads((folder / "references.json").read_text())}
    return [entry for entry in load_catalog(references_dir) if wanted & {entry.qid, entry.slug}]


@dataclass(frozen=True)
class _StoredImage:
    """An image as `validation_key` reads it: the sha256 of its file's bytes, which is the
    `content_hash` that decoding it would give (`services.common.images.decode_image`)."""

    content_hash: str


@dataclass(frozen=True)
class _StoredReference:
    """A work as `validation_key` reads it (its id and its images' content hashes, in the
    order `CatalogEntry.load` gives them), from the files without decoding them."""

    reference_id: str
    images: tuple[_StoredImage, ...]


def _stored_reference(entry: CatalogEntry) -> _StoredReference:
    """What `entry.load()` would give the key, read from the image files' bytes. A work whose
    images are not all there is loaded, for the error that loading it raises."""
    from services.common.images import content_hash

    try:
        images = tuple(_StoredImage(content_hash(path.read_bytes())) for path in entry.image_paths())
    except OSError:
        images = ()
    if not images:
        loaded = entry.load()  # raises what the scorer would say (no such folder or file, no images)
        return _StoredReference(loaded.reference_id, tuple(_StoredImage(i.content_hash) for i in loaded.images))
    return _StoredReference(entry.reference_id, images)


def validation_for(folder: str | Path, spec: BenchmarkSpec, references_dir: str | Path | None = None,
                   seed: int = VALIDATION_SEED, *, cache: bool = True,
                   cache_dir: str | Path | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """The validation of the benchmark's encoders on its references, as `Validation.to_json()`
    (also written to `folder/validation.json`), or None and why it could not be made.

    With `cache`, a validation of the same provenance is read from, or else stored in,
    `cache_dir/validation/<key>.json` (`cache_dir`: the embedding cache's root,
    $ICONICITY_CACHE or ~/.cache/iconicity); "cache" in the JSON gives the key and whether it
    was reused. Without, the cache is neither read nor written."""
    from services.scorer.encoders import load_encoder, weights_folder

    folder = Path(folder)
    source = Path(references_dir) if references_dir else folder / "catalog"
    if not source.is_dir():
        return None, f"no reference images here ({source}): pass the references folder"
    works = _run_references(folder, source)
    if len(works) < 2:
        return None, f"validation needs at least two works with images, {source} has {len(works)} of the benchmark's"
    names = _encoder_names(spec)
    try:
        loaded = {name: load_encoder(name, weights=weights_folder(name, None)) for name in dict.fromkeys(names)}
    except (FileNotFoundError, ValueError, KeyError, RuntimeError, OSError) as error:
        return None, f"encoder not available here: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    recognition, realization = loaded[names[0]], loaded[names[1]]
    store = _cache_root(cache_dir) / VALIDATION_CACHE if cache else None
    data = _validation(recognition, realization, works, _thresholds(spec, recognition, realization), seed, source, store)
    (folder / VALIDATION_FILE).write_text(json.dumps(data, indent=1))
    return data, None


def _thresholds(spec: BenchmarkSpec, recognition: Encoder, realization: Encoder) -> Thresholds:
    """The spec's thresholds where it sets them, else the encoders' calibrated ones."""
    from services.scorer.encoders import Thresholds

    asked = spec.thresholds
    return Thresholds(
        asked.recognition_static or recognition.thresholds.recognition_static,
        asked.recognition_dynamic or recognition.thresholds.recognition_dynamic,
        asked.reuse or realization.thresholds.reuse)


def _cache_root(cache_dir: str | Path | None) -> Path:
    from services.common.files import cache_root

    return Path(cache_dir) if cache_dir is not None else cache_root()


def _validation(recognition: Encoder, realization: Encoder, entries: list[CatalogEntry], thresholds: Thresholds,
                seed: int, source: Path, store: Path | None) -> dict[str, Any]:
    """`validate(...).to_json()` of the works of `entries`, read from `store/<key>.json` where
    it is there and stored there otherwise (`store` None: neither). The key is computed from
    the image files' bytes (the same key as from the decoded works: their content hashes are
    those bytes' sha256), so that reusing a validation decodes no image."""
    from services.scorer.validation import validate, validation_key

    key = validation_key(recognition, realization, [_stored_reference(e) for e in entries], thresholds, seed=seed)
    path = store / f"{key}.json" if store is not None else None
    data = _read_cached(path, key) if path is not None else None
    hit = data is not None
    if data is None:
        references = [entry.load() for entry in entries]
        # The key of what was decoded, in case a file changed since it was hashed.
        key = validation_key(recognition, realization, references, thresholds, seed=seed)
        path = store / f"{key}.json" if store is not None else None
        # As stored (JSON types), so that a computed and a reused validation are equal.
        data = json.loads(json.dumps(validate(recognition, realization, references, thresholds=thresholds, seed=seed,
                                              source=str(source)).to_json()))
        if path is not None:
            _write_cached(path, key, data)
    # The key leaves the folder out (the same images elsewhere give the same result): say
    # where they were read from this time.
    data["provenance"]["references"]["source"] = str(source)
    data["cache"] = {"key": key, "hit": hit}
    return data


def _read_cached(path: Path, key: str) -> dict[str, Any] | None:
    """The validation stored under `key`, or None where there is none or the file cannot be
    read as one (torn, foreign, another key's): it is computed again and overwritten."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError
        return None
    data = stored.get("validation") if isinstance(stored, dict) and stored.get("key") == key else None
    usable = (isinstance(data, dict) and isinstance(data.get("tasks"), dict) and isinstance(data.get("provenance"), dict)
              and isinstance(data["provenance"].get("references"), dict))
    return data if usable else None


def _write_cached(path: Path, key: str, data: dict[str, Any]) -> None:
    """Stores `{"key", "validation"}` atomically; a cache that cannot be written is not an
    error: the validation is there, only not kept."""
    from services.common.files import write_atomically

    try:
        write_atomically(path, json.dumps({"key": key, "validation": data}).encode())
    except OSError as error:
        log.warning("validation not cached at %s: %s", path, error)


def _define() -> tuple[Any, ...]:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    options = {"cache_policy": NO_CACHE, "persist_result": False, "retries": 0}

    @task(name="validate", **options)
    def validate_task(folder: str, spec: dict[str, Any], references_dir: str | None) -> tuple[dict | None, str | None]:
        """The benchmark's encoders on controlled edits of its references."""
        return validation_for(folder, BenchmarkSpec.from_dict(spec), references_dir)

    @task(name="report", **options)
    def report_task(folder: str, validation: dict | None, validation_note: str | None, tracking_uri: str | None) -> str:
        """The analyses and the self-contained HTML report, logged to the parent run."""
        from flows.report import write_report

        return str(write_report(folder, tracking_uri=tracking_uri, validation=validation,
                                validation_note=validation_note))

    @flow(name="analyze", validate_parameters=False, log_prints=False)
    def analyze(folder: str, spec: dict[str, Any], references_dir: str | None = None, tracking_uri: str | None = None,
                validate: bool = True) -> dict[str, Any]:
        """A finished benchmark's validation and report."""
        validation, note = validate_task(folder, spec, references_dir) if validate else (None, "not asked for")
        if note:
            log.warning("validation skipped: %s", note)
        report = report_task(folder, validation, note, tracking_uri)
        return {"report": report, "validation": str(Path(folder) / VALIDATION_FILE) if validation else None,
                "validation_note": note}

    return validate_task, report_task, analyze


_FLOWS: tuple[Any, ...] | None = None
_FLOWS_LOCK = threading.Lock()


def analyze_flow():
    """The Prefect flow `analyze` (for deployments: `flows.analyze:analyze_flow`)."""
    global _FLOWS
    with _FLOWS_LOCK:
        if _FLOWS is None:
            _FLOWS = _define()
        return _FLOWS[2]


def run_analysis(folder: str | Path, spec: BenchmarkSpec, *, references_dir: str | Path | None = None,
                 tracking_uri: str | None = None, validate: bool = True) -> AnalysisResult:
    """Runs the `analyze` flow on a results folder; returns where the report is."""
    folder = Path(folder).resolve()
    flow = analyze_flow().with_options(flow_run_name=f"analyze-{spec.name}-{spec.content_hash()[:8]}")
    data = flow(folder=str(folder), spec=spec.to_dict(), references_dir=str(references_dir) if references_dir else None,
                tracking_uri=tracking_uri, validate=validate)
    return AnalysisResult(**data)


__all__ = ["AnalysisResult", "VALIDATION_FILE", "analyze_flow", "run_analysis", "validation_for"]
