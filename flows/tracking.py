"""Every benchmark run in MLflow, through an explicit client and run ids.

One experiment per benchmark (its `mlflow.experiment`, else its name), one parent run per
benchmark execution, one child run per (model, perturbation) with the `mlflow.parentRunId`
tag. Nothing uses MLflow's global active run, so parallel tasks log to their own runs safely.

Runs are found again rather than created twice: a parent is identified by the benchmark's
content hash and an execution id (tags `iconicity.spec_hash`, `iconicity.execution_id`), a
child by its parent and its cell (`iconicity.cell` = `model/perturbation`). A restarted
benchmark therefore continues in the same runs; a new execution id starts new ones.

A child run holds:
- params: benchmark, spec hash, perturbation, model name, pipeline id, weights revision,
  scheduler, steps, guidance, size, dtype, n (images per prompt), seeds, encoders, requested
  thresholds, CRT variant, imagery; and, once scored, the thresholds applied;
- metrics (`store.cell_metrics`): CRA, VR, VI, CRT over all, static and dynamic references
  with bootstrap 95% interval bounds, counts, and generation and scoring throughput;
- artifacts: `results/images.parquet`, `results/references.parquet`, `benchmark.yaml` (the
  resolved benchmark file), `contact_sheets/*.png` (reference vs generated images);
- tags: project version, git commit (`mlflow.source.git.commit`) where there is one.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# No network here: MLflow must not try to send telemetry (ENVIRONMENT.md).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

from flows import store  # noqa: E402
from flows.spec import BenchmarkSpec  # noqa: E402

TAG_KIND = "iconicity.kind"  # parent | child
TAG_SPEC_HASH = "iconicity.spec_hash"
TAG_EXECUTION = "iconicity.execution_id"
TAG_BENCHMARK = "iconicity.benchmark"
TAG_CELL = "iconicity.cell"
TAG_MODEL = "iconicity.model"
TAG_PERTURBATION = "iconicity.perturbation"
TAG_VERSION = "iconicity.version"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_DIRTY = "iconicity.git_dirty"
TAG_OUT_DIR = "iconicity.out_dir"  # parent: the results folder, where reports find the images

IMAGES_ARTIFACT = "results/images.parquet"
REFERENCES_ARTIFACT = "results/references.parquet"
SPEC_ARTIFACT = "benchmark.yaml"
CONTACT_SHEETS = "contact_sheets"

REPO_ROOT = Path(__file__).resolve().parents[1]


class TrackingError(RuntimeError):
    """MLflow cannot be used as asked (unreachable store, unknown run); one line."""


@functools.lru_cache(maxsize=1)
def project_version() -> str:
    try:
        return importlib.metadata.version("iconicity")
    except importlib.metadata.PackageNotFoundError:
        match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
        return match.group(1) if match else "unknown"


@functools.lru_cache(maxsize=1)
def git_commit() -> tuple[str, bool] | None:
    """(commit, dirty) of the repository the code runs from, or None outside a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit, bool(status.strip())) if re.fullmatch(r"[0-9a-f]{40}", commit) else None


def provenance_tags() -> dict[str, str]:
    tags = {TAG_VERSION: project_version()}
    commit = git_commit()
    if commit is not None:
        tags[TAG_GIT_COMMIT] = commit[0]
        tags[TAG_GIT_DIRTY] = str(commit[1]).lower()
    return tags


def seeds_text(seeds: Sequence[int]) -> str:
    """A compact, exact form of a seed list for a param.

    >>> seeds_text([0, 1, 2, 3]), seeds_text([5]), seeds_text([3, 9])
    ('0..3', '5', '3,9')
    """
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def _text(value: Any) -> str:
    if value is None:
        return "calibrated"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def benchmark_params(spec: BenchmarkSpec) -> dict[str, str]:
    """What every run of the benchmark shares."""
    return {
        "benchmark": spec.name,
        "spec_hash": spec.content_hash(),
        "n": str(spec.images_per_prompt),
        "seeds": seeds_text(spec.seeds),
        "recognition_encoder": spec.encoders.recognition,
        "realization_encoder": spec.encoders.realization,
        **{f"threshold_{k}": _text(v) for k, v in spec.thresholds.to_dict().items()},
        "crt_variant": spec.crt_variant,
        "imagery": spec.imagery,
    }


def child_params(spec: BenchmarkSpec, model: Mapping[str, Any], perturbation: str) -> dict[str, str]:
    """A child run's params: the benchmark's, the model's configuration, the perturbation."""
    return {
        **benchmark_params(spec),
        "perturbation": perturbation,
        "model": str(model["name"]),
        "model_id": str(model.get("pipeline") or model["name"]),
        "weights_revision": str(model.get("revision") or "default"),
        "scheduler": str(model.get("scheduler") or "pipeline default"),
        "steps": str(model.get("steps", "")),
        "guidance": _text(float(model["guidance"])) if model.get("guidance") is not None else "",
        "size": f"{model.get('height', '')}x{model.get('width', '')}",
        "dtype": str(model.get("dtype", "")),
    }


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    created: bool  # False: an existing run of the same spec and execution was found
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED as found (before reactivation)


@dataclass
class Tracker:
    """MLflow runs of one benchmark experiment at `tracking_uri` (`sqlite:///FILE`,
    `http://HOST:PORT`, or a folder)."""

    tracking_uri: str
    experiment: str
    artifact_location: str | None = None  # default: beside a sqlite store, else the server's
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        from mlflow.tracking import MlflowClient

        prepare_store(self.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._experiment_id()

    @classmethod
    def for_spec(cls, spec: BenchmarkSpec, tracking_uri: str | None = None) -> Tracker:
        uri = tracking_uri or spec.mlflow.tracking_uri
        if not uri:
            raise TrackingError("no MLflow tracking URI: set mlflow.tracking_uri in the benchmark or pass one")
        return cls(uri, spec.experiment)

    def _writing(self):
        """Writes to one SQLite file are serialised (SQLite takes one writer at a time and
        MLflow's store would fail with "database is locked" under parallel tasks); a
        tracking server takes them in parallel."""
        return self._lock if self.tracking_uri.startswith("sqlite:") else contextlib.nullcontext()

    # -- experiment ------------------------------------------------------------------------
    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        with self._lock:
            try:
                found = self.client.get_experiment_by_name(self.experiment)
                if found is not None:
                    if found.lifecycle_stage == "deleted":
                        self.client.restore_experiment(found.experiment_id)
                    return found.experiment_id
                return self.client.create_experiment(self.experiment, artifact_location=self._artifact_location(),
                                                     tags={TAG_BENCHMARK: self.experiment})
            except MlflowException as error:
                if "already exists" in str(error):  # created meanwhile by another process
                    return self.client.get_experiment_by_name(self.experiment).experiment_id
                raise TrackingError(f"MLflow at {self.tracking_uri}: {first_line(error)}") from None
            except OSError as error:
                raise TrackingError(f"MLflow at {self.tracking_uri}: {error}") from None

    def _artifact_location(self) -> str | None:
        if self.artifact_location:
            return self.artifact_location
        database = sqlite_database(self.tracking_uri)
        if database is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.experiment)
            return (database.resolve().parent / "mlartifacts" / slug).as_uri()
        return None

    # -- runs ------------------------------------------------------------------------------
    def _find(self, tags: Mapping[str, str]) -> list[Any]:
        clauses = " and ".join(f"tags.`{k}` = '{quote_filter_value(v)}'" for k, v in tags.items())
        return self.client.search_runs([self.experiment_id], filter_string=clauses, max_results=10,
                                       order_by=["attributes.start_time ASC"])

    def _find_or_create(self, tags: dict[str, str], run_name: str, params: Mapping[str, str]) -> TrackedRun:
        from mlflow.entities import Param, RunStatus, RunTag

        with self._lock:
            found = self._find(tags)
            if found:
                run = found[0]
                tracked = TrackedRun(run.info.run_id, False, run.info.status)
                if run.info.status != "RUNNING":
                    self.client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            else:
                run = self.client.create_run(self.experiment_id, tags={**provenance_tags(), **tags}, run_name=run_name)
                tracked = TrackedRun(run.info.run_id, True, "RUNNING")
        # Again on a found run: a run killed between its creation and its params gets them now;
        # the same values logged twice are accepted.
        with self._writing():
            self.client.log_batch(tracked.run_id, params=[Param(k, v) for k, v in params.items()],
                                  tags=[RunTag(TAG_RUN_NAME, run_name)])
        return tracked

    def parent_run(self, spec: BenchmarkSpec, execution_id: str | None = None) -> TrackedRun:
        """The parent run of this execution of `spec`: found again when it exists (a
        restart), else created with the benchmark's params and its resolved file. Without
        an execution id the spec hash serves: running the same benchmark again continues
        its runs."""
        spec_hash = spec.content_hash()
        execution_id = execution_id or spec_hash[:16]
        tags = {TAG_KIND: "parent", TAG_BENCHMARK: spec.name, TAG_SPEC_HASH: spec_hash, TAG_EXECUTION: execution_id}
        run = self._find_or_create(tags, f"{spec.name}-{execution_id}", benchmark_params(spec))
        self.log_text(run.run_id, spec.to_yaml(), SPEC_ARTIFACT)
        return run

    def child_run(self, parent_run_id: str, spec: BenchmarkSpec, model: Mapping[str, Any], perturbation: str) -> TrackedRun:
        """The child run of (model, perturbation) under a parent: found again, else created
        with its params. `model` is the whole configuration (`spec.model_configs()`)."""
        parent = self.client.get_run(parent_run_id)
        cell = f"{model['name']}/{perturbation}"
        tags = {TAG_KIND: "child", TAG_PARENT: parent_run_id, TAG_CELL: cell, TAG_MODEL: str(model["name"]),
                TAG_PERTURBATION: perturbation, TAG_BENCHMARK: spec.name,
                TAG_SPEC_HASH: parent.data.tags.get(TAG_SPEC_HASH, spec.content_hash()),
                TAG_EXECUTION: parent.data.tags.get(TAG_EXECUTION, "")}
        run = self._find_or_create(tags, cell.replace("/", "-"), child_params(spec, model, perturbation))
        self.log_text(run.run_id, spec.to_yaml(), SPEC_ARTIFACT)
        return run

    def children(self, parent_run_id: str) -> list[Any]:
        return self.client.search_runs([self.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{quote_filter_value(parent_run_id)}'",
                                       max_results=10_000)

    # -- logging ---------------------------------------------------------------------------
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 500):  # log_batch takes at most 1000 metrics
            with self._writing():
                self.client.log_batch(run_id, metrics=items[start:start + 500])

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params are write-once in MLflow: logging the same value again (a restart) is
        fine, a different one is an error."""
        from mlflow.entities import Param

        with self._writing():
            self.client.log_batch(run_id, params=[Param(k, _text(v)) for k, v in params.items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        with self._writing():
            self.client.log_text(run_id, text, artifact_file)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        with self._writing():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_cell(
        self,
        run_id: str,
        image_rows: Sequence[Mapping[str, Any]],
        out_dir: str | Path,
        crt_variant: str = "recognized_images",
        contact_sheets: Sequence[str | Path] = (),
        extra_metrics: Mapping[str, float] | None = None,
        resamples: int = 10_000,
    ) -> dict[str, float]:
        """A child run's results: writes its Parquet files to `out_dir` (per image, and per
        reference by `store.reference_rows`), logs them, the contact sheets, the metrics of
        `store.cell_metrics` plus throughput (images per second of generation and scoring
        time, from the rows' seconds, unless `extra_metrics` gives them) and the thresholds
        applied. Returns the metrics logged."""
        out_dir = Path(out_dir)
        reference_rows = store.reference_rows(image_rows, crt_variant)
        images_file = store.write_image_parquet(image_rows, out_dir / Path(IMAGES_ARTIFACT).name)
        references_file = store.write_reference_parquet(reference_rows, out_dir / Path(REFERENCES_ARTIFACT).name)
        metrics = store.cell_metrics(reference_rows, resamples=resamples) if reference_rows else {"n_images": 0.0}
        metrics.update(throughput(image_rows))
        metrics.update(extra_metrics or {})
        self.log_metrics(run_id, metrics)
        applied = {}
        for imagery in ("static", "dynamic"):
            taus = sorted({r["recognition_threshold"] for r in reference_rows if r["imagery"] == imagery})
            if taus:
                applied[f"applied_recognition_threshold_{imagery}"] = ",".join(repr(float(t)) for t in taus)
        reuse = sorted({r["reuse_threshold"] for r in reference_rows})
        if reuse:
            applied["applied_reuse_threshold"] = ",".join(repr(float(t)) for t in reuse)
        self.log_params(run_id, applied)
        self.log_artifact(run_id, images_file, str(Path(IMAGES_ARTIFACT).parent))
        self.log_artifact(run_id, references_file, str(Path(REFERENCES_ARTIFACT).parent))
        for sheet in contact_sheets:
            self.log_artifact(run_id, sheet, CONTACT_SHEETS)
        return metrics

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """FINISHED, FAILED or KILLED."""
        with self._writing():
            self.client.set_terminated(run_id, status=status)

    # -- reading back ----------------------------------------------------------------------
    def metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def download(self, run_id: str, artifact_path: str, dst: str | Path) -> Path:
        from mlflow.artifacts import download_artifacts

        return Path(download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dst),
                                       tracking_uri=self.tracking_uri))


def throughput(image_rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Images per second of attributed generation and scoring time (where there was any),
    and those times."""
    n = len(image_rows)
    out: dict[str, float] = {}
    for stage in ("generation", "scoring"):
        seconds = float(sum(float(r.get(f"{stage}_seconds") or 0.0) for r in image_rows))
        out[f"{stage}_seconds"] = seconds
        if seconds > 0 and n:
            out[f"{stage}_images_per_s"] = n / seconds
    return out


# -- contact sheets --------------------------------------------------------------------------

ImageSource = Any  # bytes, a path, or a PIL image


@dataclass(frozen=True)
class SheetRow:
    """One row of a contact sheet: a reference's image, then the images generated for it.
    `recognized` (optional, one per generated image) colours their frames: green when the
    image recognizes the reference, grey when not."""

    label: str
    reference: ImageSource
    generated: Sequence[ImageSource]
    captions: Sequence[str] = ()
    recognized: Sequence[bool] = ()


_REFERENCE_FRAME = (40, 90, 200)
_RECOGNIZED_FRAME = (30, 160, 60)
_OTHER_FRAME = (170, 170, 170)


def contact_sheet(rows: Sequence[SheetRow], path: str | Path, thumb: int = 128, title: str = "") -> Path:
    """A PNG grid: per row a label, the reference image (blue frame) and the generated
    images (green frame when recognized), each scaled to fit `thumb` x `thumb`."""
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    pad, frame, text_h = 6, 3, 14
    cell = thumb + 2 * frame
    columns = 1 + max(len(r.generated) for r in rows)
    row_h = text_h + cell + text_h + pad
    top = text_h + pad if title else 0
    sheet = Image.new("RGB", (pad + columns * (cell + pad), top + pad + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad // 2), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        y = top + pad + r * row_h
        draw.text((pad, y), row.label[:120], fill=(0, 0, 0))
        images = [row.reference, *row.generated]
        for c, source in enumerate(images):
            x = pad + c * (cell + pad)
            if c == 0:
                color = _REFERENCE_FRAME
            else:
                flags = list(row.recognized)
                color = _RECOGNIZED_FRAME if c - 1 < len(flags) and flags[c - 1] else _OTHER_FRAME
            draw.rectangle([x, y + text_h, x + cell - 1, y + text_h + cell - 1], fill=color)
            picture = _thumbnail(source, thumb)
            sheet.paste(picture, (x + frame + (thumb - picture.width) // 2, y + text_h + frame + (thumb - picture.height) // 2))
            caption = "reference" if c == 0 else (list(row.captions)[c - 1] if c - 1 < len(row.captions) else "")
            if caption:
                draw.text((x, y + text_h + cell + 1), caption[:24], fill=(60, 60, 60))
    from services.common.files import write_atomically

    encoded = io.BytesIO()
    sheet.save(encoded, format="PNG")
    return write_atomically(path, encoded.getvalue())


def _thumbnail(source: ImageSource, size: int):
    """`source` scaled to fit `size` x `size`. An encoded image's thumbnail is kept: the same
    references are in every cell's sheet."""
    if isinstance(source, (bytes, bytearray)):
        return _encoded_thumbnail(bytes(source), size)
    return _scaled(source, size)


@functools.lru_cache(maxsize=32)
def _encoded_thumbnail(data: bytes, size: int):
    return _scaled(data, size)


def _scaled(source: ImageSource, size: int):
    from PIL import Image

    if isinstance(source, Image.Image):
        picture = source.copy()
    else:
        picture = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        # A JPEG decodes at the smallest power-of-two scale still at least `size` (a fraction
        # of the time of the full picture, which a thumbnail does not need).
        picture.draft("RGB", (size, size))
    picture.load()
    picture = picture.convert("RGB")
    picture.thumbnail((size, size))
    return picture


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///FILE` tracking URI; None for any other URI.

    >>> sqlite_database("sqlite:///runs/mlflow.db"), sqlite_database("http://127.0.0.1:5000")
    (PosixPath('runs/mlflow.db'), None)
    """
    return Path(tracking_uri[len("sqlite:///"):]) if tracking_uri.startswith("sqlite:///") else None


def prepare_store(tracking_uri: str) -> None:
    """Makes the sqlite store a `sqlite:///` URI names, if it is missing
    (`create_sqlite_store`); other stores are the server's business."""
    database = sqlite_database(tracking_uri)
    if database is not None:
        create_sqlite_store(database)


def create_sqlite_store(path: Path) -> None:
    """A new MLflow sqlite store at `path`, made whole or not at all. MLflow migrates a new
    store's schema in dozens of steps (ALTER TABLE ...); a process killed between two of them
    left a store that no later run could open ("duplicate column name"), which a killed
    benchmark must not do. So the store is made under a temporary name, then linked into
    place only if no other process made one there meanwhile. Migrating costs seconds of CPU
    that compete with the generation being measured, so the store is a copy of a migrated
    template kept in the cache (`_sqlite_template`), made directly when the template fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _made_whole(path, lambda temporary: _copy_sqlite_template(temporary) or _migrate_sqlite_store(temporary))


def _made_whole(path: Path, make: Callable[[Path], Any]) -> None:
    """`make` fills a temporary name beside `path`, which is then linked into place unless
    another process put a file there meanwhile (theirs is kept)."""
    # A name of its own each time: MLflow keeps a store per URI for the life of the process.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        make(temporary)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _migrate_sqlite_store(database: Path) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments(max_results=1)


class _BadTemplate(Exception):
    pass


@functools.lru_cache(maxsize=1)
def _schema_revision() -> str:
    # MLflow opens only a store at the head revision of the migrations it ships; the head is
    # read from those scripts, without a database (~0.04 s). The version alone would miss
    # migrations changed under one version (an editable or dev install).
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _sqlite_template() -> Path:
    """The cache's empty store migrated by this MLflow, made (whole or not at all, like a
    store) if missing."""
    import mlflow

    from services.common.files import cache_root

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"store-{mlflow.__version__}-{_schema_revision()}.db")
    template = cache_root() / "mlflow" / name
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        _made_whole(template, _migrate_sqlite_store)
    return template


def _copy_sqlite_template(database: Path) -> bool:
    """`database` made a copy of the template, as MLflow would have made it here and now;
    False where the template cannot serve (the store is then migrated directly)."""
    import sqlite3

    template = None
    try:
        from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
        from mlflow.utils.time import get_current_time_millis

        location = _default_artifact_location()
        # MLflow writes it as a Python literal into its SQL: a path that literal would alter
        # (quotes, backslashes) is left to MLflow. With workspaces, another store class makes
        # experiment 0.
        if MLFLOW_ENABLE_WORKSPACES.get() or repr(location) != f"'{location}'":
            return False
        template = _sqlite_template()
        shutil.copyfile(template, database)
        with contextlib.closing(sqlite3.connect(database)) as db, db:
            if db.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                raise _BadTemplate("corrupt")
            if db.execute("SELECT version_num FROM alembic_version").fetchall() != [(_schema_revision(),)]:
                raise _BadTemplate("not at the head revision")
            if db.execute("SELECT experiment_id, name FROM experiments").fetchall() != [(0, "Default")]:
                raise _BadTemplate("not empty")
            now = get_current_time_millis()
            db.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                       "WHERE experiment_id = 0", (location, now, now))
        return True
    except (_BadTemplate, sqlite3.DatabaseError):
        # A torn or foreign template would cost every later run a migration: the next makes it again.
        if template is not None:
            with contextlib.suppress(OSError):
                template.unlink()
    except Exception:  # noqa: BLE001 - the cache never fails a run
        pass
    database.unlink(missing_ok=True)
    return False


def _default_artifact_location() -> str:
    """Experiment 0's artifact location as MLflow's SqlAlchemyStore computes it for a client
    given no artifact root (`_get_sqlalchemy_store`): the server's root, else ./mlruns
    resolved against the current folder."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.tracking._tracking_service.utils import _SERVER_ARTIFACT_ROOT_ENV_VAR
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    root = os.environ.get(_SERVER_ARTIFACT_ROOT_ENV_VAR, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    return str(append_to_uri_path(resolve_uri_if_local(root), "0"))


def quote_filter_value(value: str) -> str:
    """A value inside single quotes of an MLflow filter string."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def first_line(error: BaseException) -> str:
    """An MLflow error in one line (an unreachable server said plainly)."""
    text = str(error).strip()
    if "Failed to establish a new connection" in text or "Max retries exceeded" in text:
        reason = "connection refused" if "Connection refused" in text else "no answer"
        return f"cannot reach the server ({reason})"
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def quick_http() -> Iterator[None]:
    """An unreachable server fails in seconds, not after MLflow's minutes of retries (the
    environment is restored after: MLflow reads these per request)."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
              "MLFLOW_DISABLE_TELEMETRY": "true"}
    saved = {k: os.environ.get(k) for k in wanted}
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
