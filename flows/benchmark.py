"""The benchmark flow: harvest, generate, score and log every (model, perturbation) cell.

Everything goes through the services' gRPC APIs (harvester, generator, scorer); results go
to a `ResultStore` keyed by content, so a benchmark killed at any point and started again
asks the generator and the scorer only for what is missing, and counts nothing twice.

The domain logic is plain functions over a `Clients` object (channels, stubs, one semaphore
per service, retries) that the Prefect tasks only wrap:

- `list_references(clients, spec)`: the references passing the spec's filter, with their
  prompt variants and their first image (for contact sheets);
- `generate_images(clients, results, config, reference, perturbation)`: the prompt's n
  images with the spec's seeds, only those whose `GenerationKey` is not stored yet;
- `score_images(clients, results, spec, config, reference, perturbation)`: registers the
  reference by id with the scorer, scores the images whose score key is not stored yet;
- `cell_rows(...)`: the per-image rows of a cell from the store.

Transient gRPC failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) are retried
with exponential backoff per the spec's `retries`; anything else fails at once. Each
service has at most `concurrency.<service>` calls in flight. A cell whose generation or
scoring fails (an unknown model, an unreachable service) is reported (its MLflow child run is
FAILED with the cause in the `iconicity.error` tag) and the rest of the matrix completes.

`run_benchmark(spec, out_dir, addresses)` runs the Prefect flow `benchmark` and returns a
`BenchmarkResult`. The results folder holds `results/` (the store) and
`cells/<model>/<perturbation>/` (images.parquet, references.parquet, contact_sheet.png).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

for _name, _value in (("DO_NOT_TRACK", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                      ("MLFLOW_DISABLE_TELEMETRY", "true"),
                      # Prefect's temporary local API takes longer than its default 20 s to come up
                      # on 2 cores busy with Triton and the scorer.
                      ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"),
                      # One INFO line per task drowns the progress bar; set it to INFO to see them.
                      ("PREFECT_LOGGING_LEVEL", "WARNING")):
    os.environ.setdefault(_name, _value)

import grpc  # noqa: E402
from iconicity.v1 import (  # noqa: E402
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    harvester_pb2,
    harvester_pb2_grpc,
    scorer_pb2,
    scorer_pb2_grpc,
)

from flows import store as store_module  # noqa: E402
from flows.spec import BenchmarkSpec  # noqa: E402
from flows.store import GenerationKey, ResultStore, ScoreContext, ScoreRecord, score_key  # noqa: E402

log = logging.getLogger("iconicity.flows")

TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED})
CALL_TIMEOUT_S = {"harvester": 120.0, "generator": 1800.0, "scorer": 1800.0}
SCORE_BATCH = 16  # images per ScoreImages call
TAG_ERROR = "iconicity.error"
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

_KINDS = {harvester_pb2.REFERENCE_KIND_STILL: "still", harvester_pb2.REFERENCE_KIND_MOVING: "moving"}
_KIND_PROTO = {"still": harvester_pb2.REFERENCE_KIND_STILL, "moving": harvester_pb2.REFERENCE_KIND_MOVING}
_IMAGERY_PROTO = {"static": common_pb2.IMAGERY_STATIC, "dynamic": common_pb2.IMAGERY_DYNAMIC}
_CRT_PROTO = {"recognized_images": common_pb2.CRT_VARIANT_RECOGNIZED_IMAGES,
              "all_images": common_pb2.CRT_VARIANT_ALL_IMAGES}


class ServiceError(RuntimeError):
    """A service call that failed for good; one line: service, status code, details."""

    def __init__(self, service: str, code: grpc.StatusCode | None, details: str, attempts: int = 1) -> None:
        self.service, self.code, self.details, self.attempts = service, code, details, attempts
        code_name = code.name if code is not None else "ERROR"
        tries = f" (after {attempts} tries)" if attempts > 1 else ""
        super().__init__(f"{service} {code_name}: {_one_line(details)}{tries}")


def _one_line(text: str) -> str:
    text = str(text).strip()
    return text.splitlines()[0] if text else ""


# -- progress ----------------------------------------------------------------------------------

_LISTENERS: list[Callable[[str, int], None]] = []


@contextlib.contextmanager
def progress_listener(callback: Callable[[str, int], None]) -> Iterator[None]:
    """Calls `callback(event, count)` while the block runs: events `planned` (images and
    scores the matrix needs), `generated`, `scored`, `skipped` (found in the store), `failed`."""
    _LISTENERS.append(callback)
    try:
        yield
    finally:
        _LISTENERS.remove(callback)


def _notify(event: str, count: int) -> None:
    for callback in list(_LISTENERS):
        with contextlib.suppress(Exception):
            callback(event, count)


# -- clients -----------------------------------------------------------------------------------

class Clients:
    """Channels and stubs of the three services, a semaphore per service bounding the calls
    in flight (`spec.concurrency`), and retries of transient failures (`spec.retries`)."""

    def __init__(self, addresses: Mapping[str, str], spec: BenchmarkSpec,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.addresses = {k: addresses[k] for k in ("harvester", "generator", "scorer")}
        self.retries = spec.retries
        self.sleep = sleep
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        self.channels = {k: grpc.insecure_channel(v, options=options) for k, v in self.addresses.items()}
        self.harvester = harvester_pb2_grpc.HarvesterServiceStub(self.channels["harvester"])
        self.generator = generator_pb2_grpc.GeneratorServiceStub(self.channels["generator"])
        self.scorer = scorer_pb2_grpc.ScorerServiceStub(self.channels["scorer"])
        self.semaphores = {k: threading.BoundedSemaphore(getattr(spec.concurrency, k)) for k in self.addresses}
        self.calls = {k: 0 for k in self.addresses}  # RPCs started, retries included
        self._lock = threading.Lock()
        self._encoders: dict[str, Any] | None = None
        self._handles: dict[tuple[str, str], scorer_pb2.RegisterReferenceResponse] = {}

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, service: str, what: str, fn: Callable[[float], Any]) -> Any:
        """`fn(timeout_s)` under the service's semaphore, retried on transient status codes
        after `retries.delay(k)` seconds, at most `retries.attempts` times."""
        attempt = 0
        while True:
            attempt += 1
            with self._lock:
                self.calls[service] += 1
            try:
                with self.semaphores[service]:
                    return fn(CALL_TIMEOUT_S[service])
            except grpc.RpcError as error:
                code = error.code() if hasattr(error, "code") else None
                details = (error.details() if hasattr(error, "details") else "") or str(code)
                if code in TRANSIENT and attempt <= self.retries.attempts:
                    delay = self.retries.delay(attempt - 1)
                    log.warning("%s %s: %s; retry %d in %.1f s", service, what, code.name, attempt, delay)
                    self.sleep(delay)
                    continue
                raise ServiceError(service, code, f"{what}: {details}", attempt) from None

    # -- scorer facts, asked once ----------------------------------------------------------
    def encoders(self) -> dict[str, Any]:
        with self._lock:
            if self._encoders is not None:
                return self._encoders
        answer = self.call("scorer", "ListEncoders",
                           lambda t: self.scorer.ListEncoders(scorer_pb2.ListEncodersRequest(), timeout=t))
        found = {e.name: e for e in answer.encoders}
        with self._lock:
            self._encoders = found
        return found

    def register(self, reference_id: str, imagery: str) -> scorer_pb2.RegisterReferenceResponse:
        """The scorer's handle of a reference (registered by id once per run)."""
        key = (reference_id, imagery)
        with self._lock:
            if key in self._handles:
                return self._handles[key]
        request = scorer_pb2.RegisterReferenceRequest(reference_id=reference_id, imagery=_IMAGERY_PROTO[imagery])
        answer = self.call("scorer", f"RegisterReference {reference_id}",
                           lambda t: self.scorer.RegisterReference(request, timeout=t))
        with self._lock:
            self._handles[key] = answer
        return answer


# -- harvest -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReferenceInfo:
    """A reference of the benchmark as the harvester gives it."""

    id: str
    slug: str
    title: str
    kind: str  # still | moving
    imagery: str  # static | dynamic: how it is scored in this benchmark
    prompts: Mapping[str, str]  # perturbation -> prompt text
    image: bytes = b""  # its first (canonical) image, for contact sheets
    image_sha256s: tuple[str, ...] = ()
    sitelinks: int | None = None
    image_media_type: str = ""
    # The harvester's covariates (sitelinks, year, title ambiguity, caption count; None where
    # unknown), for what recognition correlates with (METHOD.md).
    covariates: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("image", "image_media_type")}


def imagery_for(spec: BenchmarkSpec, kind: str) -> str:
    """How a reference of `kind` is scored: the spec's imagery, or by kind (moving works dynamic)."""
    if spec.imagery != "by_kind":
        return spec.imagery
    return "dynamic" if kind == "moving" else "static"


def list_references(clients: Clients, spec: BenchmarkSpec) -> list[ReferenceInfo]:
    """The references of `spec` (filter: ids in order, else kind, min_sitelinks and top_n,
    most sitelinks first), each with its prompt variants and its first image."""
    flt = spec.references.filter
    if flt.ids is not None:
        protos = []
        for reference_id in flt.ids:
            request = harvester_pb2.GetReferenceRequest(reference_id=reference_id)
            protos.append(clients.call("harvester", f"GetReference {reference_id}",
                                       lambda t, r=request: clients.harvester.GetReference(r, timeout=t)).reference)
        protos = [p for p in protos if (flt.kind is None or _KINDS.get(p.kind) == flt.kind)
                  and (flt.min_sitelinks is None or (p.covariates.HasField("sitelinks")
                                                     and p.covariates.sitelinks >= flt.min_sitelinks))]
    else:
        queries: list[tuple[str | None, int]] = []
        if isinstance(flt.top_n, dict):
            queries = [(kind, n) for kind, n in flt.top_n.items()]
        else:
            queries = [(flt.kind, flt.top_n or 0)]
        protos = []
        for kind, top_n in queries:
            request = harvester_pb2.ListReferencesRequest(
                kind=_KIND_PROTO.get(kind, harvester_pb2.REFERENCE_KIND_UNSPECIFIED),
                min_sitelinks=flt.min_sitelinks or 0, top_n=top_n, with_images_only=True)
            protos.extend(clients.call("harvester", "ListReferences", lambda t, r=request: [
                m.reference for m in clients.harvester.ListReferences(r, timeout=t)]))
    if not protos:
        raise ValueError(f"no reference passes the benchmark's filter {flt.to_dict()}")
    without = [p.id for p in protos if p.n_images == 0]
    if without:
        raise ValueError(f"references without images cannot be scored: {', '.join(without)}")
    with ThreadPoolExecutor(max_workers=spec.concurrency.harvester) as pool:
        return list(pool.map(lambda p: _reference_info(clients, spec, p), protos))


def _reference_info(clients: Clients, spec: BenchmarkSpec, reference: harvester_pb2.Reference) -> ReferenceInfo:
    request = harvester_pb2.ListPromptVariantsRequest(reference_id=reference.id)
    variants = clients.call("harvester", f"ListPromptVariants {reference.id}",
                            lambda t: clients.harvester.ListPromptVariants(request, timeout=t)).variants
    prompts: dict[str, str] = {}
    for variant in variants:
        prompts.setdefault(variant.perturbation, variant.text)
    images_request = harvester_pb2.StreamReferenceImagesRequest(reference_id=reference.id)
    images = clients.call("harvester", f"StreamReferenceImages {reference.id}", lambda t: sorted(
        (m.image for m in clients.harvester.StreamReferenceImages(images_request, timeout=t)),
        key=lambda image: image.position))
    kind = _KINDS.get(reference.kind, "still")
    return ReferenceInfo(
        id=reference.id, slug=reference.slug, title=reference.title, kind=kind, imagery=imagery_for(spec, kind),
        prompts=prompts, image=images[0].data if images else b"", image_sha256s=tuple(i.sha256 for i in images),
        sitelinks=reference.covariates.sitelinks if reference.covariates.HasField("sitelinks") else None,
        image_media_type=images[0].media_type if images else "", covariates=covariates_of(reference),
    )


COVARIATE_FIELDS = ("sitelinks", "year", "same_title_catalog", "near_title_catalog", "same_title_export",
                    "near_title_export", "caption_count")


def covariates_of(reference: harvester_pb2.Reference) -> dict[str, int | None]:
    """The reference's covariates by name, None where the harvester has none."""
    values = reference.covariates
    return {name: getattr(values, name) if values.HasField(name) else None for name in COVARIATE_FIELDS}


_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
               "image/tiff": ".tif"}


def write_reference_images(references: Sequence[ReferenceInfo], out_dir: Path) -> list[dict[str, Any]]:
    """Each reference's canonical image as `reference_images/<slug><ext>` (for reports), and
    the references' summaries with its path relative to `out_dir` (`image_file`, None when
    the reference has no image)."""
    summaries = []
    for reference in references:
        summary = {**reference.summary(), "image_file": None}
        if reference.image:
            name = f"reference_images/{reference.slug or reference.id}{_EXTENSIONS.get(reference.image_media_type, '.img')}"
            path = out_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.read_bytes() != reference.image:
                path.write_bytes(reference.image)
            summary["image_file"] = name
        summaries.append(summary)
    return summaries


# -- generate ----------------------------------------------------------------------------------

class MissingPrompt(ValueError):
    """The harvester has no prompt of this perturbation for the reference."""


def prompt_for(reference: ReferenceInfo, perturbation: str) -> str:
    try:
        return reference.prompts[perturbation]
    except KeyError:
        known = ", ".join(sorted(reference.prompts)) or "none"
        raise MissingPrompt(f"reference {reference.id} has no {perturbation!r} prompt (it has: {known})") from None


def plan_images(spec: BenchmarkSpec, config: Mapping[str, Any], reference: ReferenceInfo,
                perturbation: str) -> list[GenerationKey]:
    """The cell's images of one reference, one per seed, in seed order."""
    prompt = prompt_for(reference, perturbation)
    return [GenerationKey.from_config(config, prompt, seed) for seed in spec.seeds]


def generate_images(clients: Clients, results: ResultStore, spec: BenchmarkSpec, config: Mapping[str, Any],
                    reference: ReferenceInfo, perturbation: str) -> dict[str, int]:
    """Generates the images of (model, perturbation, reference) that are not stored yet, in
    one Generate call with their seeds; each is stored as it arrives. Returns counts."""
    planned = plan_images(spec, config, reference, perturbation)
    by_key = {k.key(): k for k in planned}

    def attempt(timeout_s: float) -> int:
        missing = [by_key[k] for k in results.missing_images(by_key)]  # again on a retry: keep what arrived
        if not missing:
            return 0
        first = missing[0]
        request = generator_pb2.GenerateRequest(
            model=first.model, prompt=first.prompt, n_images=len(missing), seeds=[k.seed for k in missing],
            settings=generator_pb2.GenerationSettings(negative_prompt=first.negative_prompt, steps=first.steps,
                                                      guidance_scale=first.guidance, height=first.height,
                                                      width=first.width),
            delivery=generator_pb2.IMAGE_DELIVERY_INLINE)
        started = time.perf_counter()
        count = 0
        for response in clients.generator.Generate(request, timeout=timeout_s):
            image = response.image
            key = missing[image.index]
            if image.provenance.seed != key.seed or image.provenance.prompt != key.prompt:
                raise ServiceError("generator", None, f"image {image.index} has seed {image.provenance.seed} and prompt "
                                   f"{image.provenance.prompt!r}; asked for {key.seed} and {key.prompt!r}")
            timing = image.timing
            seconds = (timing.model_ms / max(1, timing.batch_size) / 1000.0 if timing.model_ms > 0
                       else (time.perf_counter() - started) / len(missing))
            results.put_image(key.key(), image.png, width=image.provenance.width, height=image.provenance.height,
                              model=key.model, prompt=key.prompt, seed=key.seed, seconds=seconds,
                              settings=key.to_dict())
            count += 1
            _notify("generated", 1)
        if count != len(missing):
            raise ServiceError("generator", None, f"Generate returned {count} of {len(missing)} images")
        return count

    before = len(results.missing_images(by_key))
    _notify("skipped", len(planned) - before)
    generated = clients.call("generator", f"Generate {config['name']} {reference.id} {perturbation}", attempt)
    return {"planned": len(planned), "generated": generated, "already_stored": len(planned) - before}


# -- score -------------------------------------------------------------------------------------

def _encoder_identity(encoders: Mapping[str, Any], name: str) -> str:
    """What pins an encoder's output: its name, weights and calibrated thresholds."""
    if not name:  # the scorer's default
        return "default:" + ",".join(sorted(_encoder_identity(encoders, n) for n in encoders if encoders[n].available))
    info = encoders.get(name)
    if info is None:
        known = ", ".join(sorted(encoders))
        raise ServiceError("scorer", grpc.StatusCode.NOT_FOUND, f"unknown encoder {name!r}; the scorer has {known}")
    return (f"{info.name}|{info.weights}|{info.recognition_threshold_static!r}|"
            f"{info.recognition_threshold_dynamic!r}|{info.reuse_threshold!r}")


def _encoder_name(name: str) -> str:
    return "" if name == "auto" else name


def score_context(clients: Clients, spec: BenchmarkSpec, reference: ReferenceInfo) -> tuple[ScoreContext, str]:
    """The reference's score context (registered with the scorer by id) and its handle."""
    registered = clients.register(reference.id, reference.imagery)
    encoders = clients.encoders()
    context = ScoreContext(
        reference_id=reference.id,
        # The scorer's handle hashes the content of the images it scores against (and the imagery).
        reference_images=(f"scorer-handle:{registered.handle}",),
        recognition_encoder=_encoder_identity(encoders, _encoder_name(spec.encoders.recognition)),
        realization_encoder=_encoder_identity(encoders, _encoder_name(spec.encoders.realization)),
        imagery=reference.imagery,
        recognition_threshold=spec.thresholds.recognition(reference.imagery),
        reuse_threshold=spec.thresholds.reuse,
        crt_variant=spec.crt_variant,
    )
    return context, registered.handle


def score_settings(spec: BenchmarkSpec, reference: ReferenceInfo, handle: str) -> scorer_pb2.ScoreSettings:
    settings = scorer_pb2.ScoreSettings(
        reference_handle=handle, imagery=_IMAGERY_PROTO[reference.imagery],
        recognition_encoder=_encoder_name(spec.encoders.recognition),
        realization_encoder=_encoder_name(spec.encoders.realization), crt_variant=_CRT_PROTO[spec.crt_variant])
    threshold = spec.thresholds.recognition(reference.imagery)
    if threshold is not None:
        settings.recognition_threshold = threshold
    if spec.thresholds.reuse is not None:
        settings.reuse_threshold = spec.thresholds.reuse
    return settings


def score_images(clients: Clients, results: ResultStore, spec: BenchmarkSpec, config: Mapping[str, Any],
                 reference: ReferenceInfo, perturbation: str) -> dict[str, int]:
    """Scores the cell's images of `reference` whose score is not stored yet (ScoreImages,
    at most `SCORE_BATCH` images a call); stores a `ScoreRecord` per image. Returns counts."""
    planned = [k.key() for k in plan_images(spec, config, reference, perturbation)]
    missing_images = results.missing_images(planned)
    if missing_images:
        raise RuntimeError(f"{len(missing_images)} images of {config['name']}/{perturbation}/{reference.id} "
                           "are not generated yet")
    context, handle = score_context(clients, spec, reference)
    context_key = context.key()
    wanted = {score_key(k, context_key): k for k in planned}
    missing = [wanted[s] for s in results.missing_scores(wanted)]
    _notify("skipped", len(planned) - len(missing))
    settings = score_settings(spec, reference, handle)
    scored = 0
    for start in range(0, len(missing), SCORE_BATCH):
        batch = missing[start:start + SCORE_BATCH]
        request = scorer_pb2.ScoreImagesRequest(settings=settings, images=[
            common_pb2.Image(name=k, data=results.image_bytes(k)) for k in batch])

        def attempt(timeout_s: float, request=request):
            started = time.perf_counter()
            answer = clients.scorer.ScoreImages(request, timeout=timeout_s)
            return answer, time.perf_counter() - started

        answer, seconds = clients.call("scorer", f"ScoreImages {reference.id}", attempt)
        summary = answer.summary
        records = [ScoreRecord.from_image_score(
            image, image_key=image.name, context=context_key, reference_id=reference.id,
            recognition_threshold=summary.recognition_threshold, reuse_threshold=summary.reuse_threshold,
            recognition_encoder=summary.recognition_encoder, realization_encoder=summary.realization_encoder,
            n_references_kept=summary.n_references_kept, seconds=seconds / len(batch)) for image in answer.images]
        if sorted(r.image_key for r in records) != sorted(batch):
            raise ServiceError("scorer", None, f"ScoreImages answered for other images than the {len(batch)} sent")
        results.put_scores(records)
        scored += len(records)
        _notify("scored", len(records))
    return {"planned": len(planned), "scored": scored, "already_stored": len(planned) - len(missing)}


def cell_rows(clients: Clients, results: ResultStore, spec: BenchmarkSpec, config: Mapping[str, Any],
              perturbation: str, references: Sequence[ReferenceInfo]) -> list[dict[str, Any]]:
    """The cell's per-image rows (`store.IMAGE_COLUMNS`), references in order, seeds in order."""
    rows = []
    for reference in references:
        if perturbation not in reference.prompts:
            continue
        planned = plan_images(spec, config, reference, perturbation)
        context, _ = score_context(clients, spec, reference)
        images = results.get_images(k.key() for k in planned)
        scores = results.get_scores(score_key(k.key(), context) for k in planned)
        for index, key in enumerate(planned):
            image, score = images.get(key.key()), scores.get(score_key(key.key(), context))
            if image is None or score is None:
                raise RuntimeError(f"{config['name']}/{perturbation}/{reference.id}: image {index} is not "
                                   f"{'generated' if image is None else 'scored'}")
            rows.append(store_module.image_row(
                model=config["name"], perturbation=perturbation, reference_id=reference.id,
                imagery=reference.imagery, prompt=key.prompt, image_index=index, image=image, score=score))
    return rows


def cell_contact_sheet(results: ResultStore, rows: Sequence[Mapping[str, Any]], references: Sequence[ReferenceInfo],
                       path: Path, title: str) -> Path | None:
    """Reference vs generated images of a cell, one row per reference."""
    from flows.tracking import SheetRow, contact_sheet

    by_reference: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_reference.setdefault(row["reference_id"], []).append(row)
    sheet_rows = []
    for reference in references:
        mine = by_reference.get(reference.id)
        if not mine or not reference.image:
            continue
        sheet_rows.append(SheetRow(
            label=f"{reference.title} ({reference.id}, {reference.imagery})", reference=reference.image,
            generated=[results.image_path(r["image_sha256"]) for r in mine],
            captions=[f"seed {r['seed']} s={r['recognition_similarity']:.2f}" for r in mine],
            recognized=[bool(r["recognized"]) for r in mine]))
    if not sheet_rows:
        return None
    return contact_sheet(sheet_rows, path, thumb=96, title=title)


# -- results ------------------------------------------------------------------------------------

@dataclass
class CellResult:
    model: str
    perturbation: str
    status: str  # completed | failed
    run_id: str | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    images_file: str | None = None
    references_file: str | None = None
    contact_sheet: str | None = None
    generated: int = 0
    scored: int = 0
    skipped_references: list[str] = field(default_factory=list)

    @property
    def cell(self) -> str:
        return f"{self.model}/{self.perturbation}"


@dataclass
class BenchmarkResult:
    name: str
    out_dir: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    references: list[str]
    cells: list[CellResult]
    seconds: float = 0.0
    generation_seconds: float = 0.0  # compute attributed to the images generated in this run
    scoring_seconds: float = 0.0

    @property
    def failed(self) -> list[CellResult]:
        return [c for c in self.cells if c.status != "completed"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [c.cell for c in self.failed]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkResult:
        data = {k: v for k, v in data.items() if k != "failed"}
        return cls(**{**data, "cells": [CellResult(**c) for c in data["cells"]]})


# -- Prefect -----------------------------------------------------------------------------------

@dataclass
class RunContext:
    """What the tasks of one flow run share (passed to them quoted: never serialised)."""

    spec: BenchmarkSpec
    clients: Clients
    results: ResultStore
    configs: dict[str, dict[str, Any]]
    references: dict[str, ReferenceInfo] = field(default_factory=dict)


def _prefect():
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    return flow, task, NO_CACHE


def _define() -> tuple[Any, ...]:
    flow, task, no_cache = _prefect()
    options = {"cache_policy": no_cache, "persist_result": False, "retries": 0}

    @task(name="harvest", **options)
    def harvest(ctx: RunContext) -> list[ReferenceInfo]:
        """The benchmark's references from the harvester."""
        return list_references(ctx.clients, ctx.spec)

    @task(name="generate", task_run_name="generate {model} {perturbation} {reference_id}", **options)
    def generate(ctx: RunContext, model: str, perturbation: str, reference_id: str) -> dict[str, int]:
        """The images of one (model, perturbation, reference) not stored yet."""
        return generate_images(ctx.clients, ctx.results, ctx.spec, ctx.configs[model], ctx.references[reference_id],
                               perturbation)

    @task(name="score", task_run_name="score {model} {perturbation} {reference_id}", **options)
    def score(ctx: RunContext, model: str, perturbation: str, reference_id: str) -> dict[str, int]:
        """The scores of one (model, perturbation, reference) not stored yet."""
        return score_images(ctx.clients, ctx.results, ctx.spec, ctx.configs[model], ctx.references[reference_id],
                            perturbation)

    @flow(name="benchmark", validate_parameters=False, log_prints=False)
    def benchmark(spec: dict[str, Any], out_dir: str, addresses: dict[str, str], tracking_uri: str,
                  execution_id: str | None = None) -> dict[str, Any]:
        """A whole benchmark: the models x perturbations matrix, one MLflow child run per cell."""
        return _benchmark(harvest, generate, score, BenchmarkSpec.from_dict(spec), Path(out_dir), addresses,
                          tracking_uri, execution_id)

    return harvest, generate, score, benchmark


def _failure(future: Any) -> str | None:
    """None when the task completed, else its one-line cause."""
    try:
        future.result()
    except Exception as error:
        return _one_line(str(error)) or type(error).__name__
    return None


def _benchmark(harvest, generate, score, spec: BenchmarkSpec, out_dir: Path, addresses: Mapping[str, str],
               tracking_uri: str, execution_id: str | None) -> dict[str, Any]:
    from prefect.utilities.annotations import quote

    from flows.tracking import TAG_OUT_DIR, Tracker

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.yaml").write_text(spec.to_yaml())
    configs = {c["name"]: c for c in spec.model_configs()}
    with Clients(addresses, spec) as clients, ResultStore(out_dir / "results") as results:
        ctx = RunContext(spec, clients, results, configs)
        references = harvest(quote(ctx))
        ctx.references = {r.id: r for r in references}
        summaries = write_reference_images(references, out_dir)
        (out_dir / "references.json").write_text(json.dumps(summaries, indent=2))
        cells: list[CellResult] = []
        futures: dict[tuple[str, str], list[tuple[Any, Any]]] = {}
        _notify("planned", 2 * len(configs) * len(spec.perturbations) * len(references) * spec.images_per_prompt)
        for model in configs:
            for perturbation in spec.perturbations:
                cell = CellResult(model, perturbation, "completed")
                cell.skipped_references = [r.id for r in references if perturbation not in r.prompts]
                cells.append(cell)
                pairs = []
                for reference in references:
                    if perturbation not in reference.prompts:
                        continue
                    g = generate.submit(quote(ctx), model, perturbation, reference.id)
                    s = score.submit(quote(ctx), model, perturbation, reference.id, wait_for=[g])
                    pairs.append((g, s))
                futures[(model, perturbation)] = pairs
        # MLflow only after the cells are under way: opening a new sqlite store migrates its
        # schema (seconds) and nothing needs it before the first cell's results.
        tracker = Tracker(tracking_uri, spec.experiment)
        parent = tracker.parent_run(spec, execution_id)
        tracker.client.set_tag(parent.run_id, TAG_OUT_DIR, str(out_dir))
        tracker.log_text(parent.run_id, json.dumps(summaries, indent=2), "references.json")

        generation_seconds = scoring_seconds = 0.0
        for cell in cells:
            config = configs[cell.model]
            try:
                cell.run_id = tracker.child_run(parent.run_id, spec, config, cell.perturbation).run_id
            except Exception as error:  # MLflow trouble fails this cell, not the matrix
                cell.status, cell.error = "failed", f"MLflow: {_one_line(str(error))}"
            for g, s in futures[(cell.model, cell.perturbation)]:
                error = _failure(g) or _failure(s)
                if error and cell.error is None:
                    cell.status, cell.error = "failed", error
                if error is None:
                    cell.generated += g.result()["generated"]
                    cell.scored += s.result()["scored"]
            if cell.status == "completed" and not futures[(cell.model, cell.perturbation)]:
                cell.status, cell.error = "failed", f"no reference has a {cell.perturbation!r} prompt"
            if cell.status == "completed":
                try:
                    _log_cell(tracker, clients, results, spec, config, cell, references, out_dir)
                except Exception as error:
                    cell.status, cell.error = "failed", _one_line(str(error)) or type(error).__name__
            if cell.status != "completed":
                _notify("failed", 1)
                log.error("cell %s failed: %s", cell.cell, cell.error)
                if cell.run_id is not None:
                    with contextlib.suppress(Exception):
                        tracker.client.set_tag(cell.run_id, TAG_ERROR, cell.error or "")
                        tracker.finish(cell.run_id, "FAILED")
            else:
                generation_seconds += cell.metrics.get("generation_seconds", 0.0)
                scoring_seconds += cell.metrics.get("scoring_seconds", 0.0)

        failed = [c for c in cells if c.status != "completed"]
        report = {"cells": [{"cell": c.cell, "status": c.status, "error": c.error, "run_id": c.run_id} for c in cells]}
        tracker.log_metrics(parent.run_id, {"n_cells": float(len(cells)), "n_failed_cells": float(len(failed)),
                                            "n_references": float(len(references))})
        tracker.log_text(parent.run_id, json.dumps(report, indent=2), "cells.json")
        if failed:
            tracker.client.set_tag(parent.run_id, TAG_ERROR, "; ".join(f"{c.cell}: {c.error}" for c in failed)[:4000])
        tracker.finish(parent.run_id, "FAILED" if failed else "FINISHED")
        result = BenchmarkResult(
            name=spec.name, out_dir=str(out_dir), tracking_uri=tracking_uri, experiment=spec.experiment,
            parent_run_id=parent.run_id, references=[r.id for r in references], cells=cells,
            seconds=time.perf_counter() - started, generation_seconds=generation_seconds,
            scoring_seconds=scoring_seconds)
        (out_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=2))
        return result.to_dict()


def _log_cell(tracker: Any, clients: Clients, results: ResultStore, spec: BenchmarkSpec, config: Mapping[str, Any],
              cell: CellResult, references: Sequence[ReferenceInfo], out_dir: Path) -> None:
    rows = cell_rows(clients, results, spec, config, cell.perturbation, references)
    folder = out_dir / "cells" / cell.model / cell.perturbation
    sheet = cell_contact_sheet(results, rows, references, folder / "contact_sheet.png",
                               f"{spec.name}: {cell.model} / {cell.perturbation}")
    cell.metrics = tracker.log_cell(cell.run_id, rows, folder, spec.crt_variant,
                                    contact_sheets=[sheet] if sheet else [])
    tracker.finish(cell.run_id)
    cell.images_file = str(folder / "images.parquet")
    cell.references_file = str(folder / "references.parquet")
    cell.contact_sheet = str(sheet) if sheet else None


_FLOWS: tuple[Any, ...] | None = None
_FLOWS_LOCK = threading.Lock()


def flows() -> tuple[Any, ...]:
    """The Prefect tasks and flow (harvest, generate, score, benchmark), defined on first use
    so that importing this module does not import Prefect."""
    global _FLOWS
    with _FLOWS_LOCK:
        if _FLOWS is None:
            _FLOWS = _define()
        return _FLOWS


def benchmark_flow():
    """The Prefect flow `benchmark` (for deployments: `flows.benchmark:benchmark_flow`)."""
    return flows()[3]


def run_benchmark(spec: BenchmarkSpec, out_dir: str | Path, addresses: Mapping[str, str], *,
                  tracking_uri: str | None = None, execution_id: str | None = None) -> BenchmarkResult:
    """Runs the `benchmark` flow on `addresses` (harvester, generator, scorer as host:port;
    `tracking_uri` too, unless given) with a thread pool sized by the spec's concurrency."""
    from prefect.task_runners import ThreadPoolTaskRunner

    tracking_uri = tracking_uri or addresses.get("tracking_uri")
    if not tracking_uri:
        raise ValueError("no MLflow tracking URI: pass one or set mlflow.tracking_uri in the benchmark")
    workers = spec.concurrency.generator + spec.concurrency.scorer + 2
    flow = flows()[3].with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers),
                                   flow_run_name=f"{spec.name}-{spec.content_hash()[:8]}")
    data = flow(spec=spec.to_dict(), out_dir=str(Path(out_dir).resolve()),
                addresses={k: addresses[k] for k in ("harvester", "generator", "scorer")},
                tracking_uri=tracking_uri, execution_id=execution_id)
    return BenchmarkResult.from_dict(data)


__all__ = [
    "BenchmarkResult", "CellResult", "Clients", "MissingPrompt", "ReferenceInfo", "ServiceError", "benchmark_flow",
    "cell_contact_sheet", "cell_rows", "flows", "generate_images", "imagery_for", "list_references", "plan_images",
    "progress_listener", "run_benchmark", "score_context", "score_images", "score_settings",
]
