"""The benchmark file: one YAML document describes a whole benchmark, frozen once read.

Every key, with its default (`flows/benchmarks/default.yaml` and `paper.yaml` are complete
examples)::

    name: default                  # required; letters, digits, _ . -; names the MLflow experiment
    description: ""
    references:
      source: catalog              # catalog | harvester
      catalog: references.json     # source catalog: a catalog file (JSON) or a harvested catalog folder
      harvest_config: null         # source harvester: a `iconicity harvest --config` file for a local harvester
      images_dir: null             # offline image source: one folder per slug (../shared/data/references)
      filter:
        ids: null                  # QIDs or slugs, in this order
        kind: null                 # still | moving
        min_sitelinks: null
        top_n: null                # N, or per kind {still: N, moving: M}; most sitelinks first
    models: [tiny-sd, tiny-flux]   # registry names, or mappings the generator's ModelConfig.from_dict
                                   # accepts (a registry name with overrides, or name + pipeline + ...)
    perturbations: [original, synonym, literal]   # or custom names the harvester has prompts for
    images_per_prompt: 2
    seeds: 0                       # base seed b: image j gets seed b + j; or an explicit list, one per image
    encoders: {recognition: classical, realization: classical}   # scorer encoder names, or auto
    thresholds: {recognition_static: null, recognition_dynamic: null, reuse: null}  # null: calibrated
    crt_variant: recognized_images # recognized_images | all_images
    imagery: by_kind               # static | dynamic | by_kind (still works static, moving dynamic)
    services: {harvester: local, generator: local, scorer: local, triton: local}   # or host:port
    mlflow: {tracking_uri: null, experiment: null}   # null: the runner's local store; the name
    concurrency: {harvester: 4, generator: 2, scorer: 2}   # requests in flight per service
    retries: {attempts: 3, backoff_s: 1.0, max_backoff_s: 30.0}

Relative paths are relative to the file's folder (`base_dir`). A wrong key names the key,
where it is and the allowed ones; a wrong value says what is allowed:

>>> BenchmarkSpec.from_dict({"name": "x", "models": [{"name": "tiny-sd", "stepz": 3}]})
Traceback (most recent call last):
...
flows.spec.BenchmarkError: models[0].stepz: unknown key; allowed: call_kwargs, description, dtype, guidance, guidance_range, height, max_size, min_size, name, negative_prompt, pipeline, pipeline_class, revision, safety_checker, scheduler, size_multiple, steps, steps_range, variant, width
>>> spec = BenchmarkSpec.from_dict({"name": "x", "seeds": 10, "images_per_prompt": 3})
>>> spec.seeds
(10, 11, 12)
>>> len(spec.content_hash())
64
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BENCHMARKS_DIR = Path(__file__).resolve().parent / "benchmarks"
DEFAULT_BENCHMARK = BENCHMARKS_DIR / "default.yaml"
PAPER_BENCHMARK = BENCHMARKS_DIR / "paper.yaml"

BUILT_IN_PERTURBATIONS = ("original", "synonym", "literal")
SOURCES = ("catalog", "harvester")
KINDS = ("still", "moving")
IMAGERIES = ("static", "dynamic", "by_kind")
CRT_VARIANTS = ("recognized_images", "all_images")
SERVICES = ("harvester", "generator", "scorer", "triton")
LOCAL = "local"
AUTO_ENCODER = "auto"
DTYPES = ("float32", "float16", "bfloat16")

# The fields of services.generator.models.ModelConfig: a model mapping may use these keys
# (a test keeps the two lists equal). Kept here so reading a benchmark imports nothing heavy.
MODEL_KEYS = (
    "call_kwargs", "description", "dtype", "guidance", "guidance_range", "height", "max_size", "min_size", "name",
    "negative_prompt", "pipeline", "pipeline_class", "revision", "safety_checker", "scheduler", "size_multiple",
    "steps", "steps_range", "variant", "width",
)
# The generator's registry names, used when services.generator.models cannot be imported.
KNOWN_MODELS = ("sd15", "sd21", "sdxl", "sd35-medium", "flux-schnell", "tiny-sd", "tiny-flux")

# What does not change a result: left out of the content hash, so the same benchmark run
# against other service addresses, another MLflow store or other limits resumes the same work.
OPERATIONAL_KEYS = ("description", "base_dir", "services", "mlflow", "concurrency", "retries")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PERTURBATION = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")
_MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


class BenchmarkError(ValueError):
    """A benchmark file that cannot be used; the message says where and what is allowed."""


# -- small validators: each names the location and what is allowed ------------------------

def _fail(where: str, message: str) -> BenchmarkError:
    return BenchmarkError(f"{where}: {message}" if where else message)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value: Any, where: str, allowed: Sequence[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, f"must be a mapping with keys {', '.join(allowed)}; got {_describe(value)}")
    for key in value:
        if key not in allowed:
            raise _fail(f"{where}.{key}" if where else str(key), f"unknown key; allowed: {', '.join(allowed)}")
    return dict(value)


def _string(value: Any, where: str, pattern: re.Pattern[str] | None = None, allowed: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"must be a non-empty string{allowed and ' (' + allowed + ')'}; got {_describe(value)}")
    if pattern is not None and not pattern.match(value):
        raise _fail(where, f"must be {allowed}; got {_describe(value)}")
    return value


def _choice(value: Any, where: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _fail(where, f"must be one of {', '.join(choices)}; got {_describe(value)}")
    return value


def _integer(value: Any, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"must be an integer{_range_text(minimum, maximum)}; got {_describe(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(where, f"must be an integer{_range_text(minimum, maximum)}; got {value}")
    return value


def _range_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return ""


def _number(value: Any, where: str, minimum: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        bound = f" >= {minimum:g}" if minimum > -math.inf else ""
        raise _fail(where, f"must be a finite number{bound}; got {_describe(value)}")
    return float(value)


def _open_unit(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise _fail(where, f"must be a number in (0, 1) or null (the encoder's calibrated threshold); got {_describe(value)}")
    return float(value)


def _optional_path(value: Any, where: str) -> str | None:
    if value is None:
        return None
    return _string(value, where, allowed="a path")


def _address(value: Any, where: str) -> str:
    text = _string(value, where, allowed="local or host:port")
    if text == LOCAL:
        return text
    match = _HOST_PORT.match(text)
    if not match or not 1 <= int(match.group("port")) <= 65535:
        raise _fail(where, f"must be local or host:port with a port in [1, 65535]; got {_describe(value)}")
    return text


# -- the parts of a benchmark --------------------------------------------------------------

@dataclass(frozen=True)
class ReferenceFilter:
    ids: tuple[str, ...] | None = None
    kind: str | None = None
    min_sitelinks: int | None = None
    top_n: int | dict[str, int] | None = None

    KEYS = ("ids", "kind", "min_sitelinks", "top_n")

    @classmethod
    def from_dict(cls, data: Any, where: str = "references.filter") -> ReferenceFilter:
        data = _mapping(data, where, cls.KEYS)
        ids = data.get("ids")
        if ids is not None:
            if isinstance(ids, str) or not isinstance(ids, Sequence) or not ids:
                raise _fail(f"{where}.ids", f"must be a non-empty list of QIDs or slugs; got {_describe(ids)}")
            ids = tuple(_string(v, f"{where}.ids[{i}]", allowed="a QID or slug") for i, v in enumerate(ids))
            repeated = sorted({v for v in ids if ids.count(v) > 1})
            if repeated:
                raise _fail(f"{where}.ids", f"repeats {', '.join(repeated)}")
        kind = data.get("kind")
        if kind is not None:
            _choice(kind, f"{where}.kind", KINDS)
        min_sitelinks = data.get("min_sitelinks")
        if min_sitelinks is not None:
            _integer(min_sitelinks, f"{where}.min_sitelinks", 0)
        top_n = data.get("top_n")
        if isinstance(top_n, Mapping):
            top_n = {k: _integer(v, f"{where}.top_n.{k}", 1) for k, v in _mapping(top_n, f"{where}.top_n", KINDS).items()}
            if not top_n:
                raise _fail(f"{where}.top_n", "must name at least one of still, moving")
            if kind is not None and set(top_n) != {kind}:
                raise _fail(f"{where}.top_n", f"names kinds {', '.join(sorted(top_n))} but kind is {kind}")
        elif top_n is not None:
            top_n = _integer(top_n, f"{where}.top_n", 1)
        return cls(ids, kind, min_sitelinks, top_n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids) if self.ids is not None else None,
            "kind": self.kind,
            "min_sitelinks": self.min_sitelinks,
            "top_n": dict(self.top_n) if isinstance(self.top_n, dict) else self.top_n,
        }


@dataclass(frozen=True)
class ReferencesSpec:
    source: str = "catalog"
    catalog: str | None = None
    harvest_config: str | None = None
    images_dir: str | None = None
    filter: ReferenceFilter = field(default_factory=ReferenceFilter)

    KEYS = ("source", "catalog", "harvest_config", "images_dir", "filter")

    @classmethod
    def from_dict(cls, data: Any, where: str = "references") -> ReferencesSpec:
        data = _mapping(data, where, cls.KEYS)
        source = _choice(data.get("source", "catalog"), f"{where}.source", SOURCES)
        catalog = _optional_path(data.get("catalog"), f"{where}.catalog")
        harvest_config = _optional_path(data.get("harvest_config"), f"{where}.harvest_config")
        if source == "catalog" and catalog is None:
            raise _fail(f"{where}.catalog", "is required when source is catalog (a catalog JSON file or a harvested catalog folder)")
        if source == "catalog" and harvest_config is not None:
            raise _fail(f"{where}.harvest_config", "only applies when source is harvester")
        return cls(
            source=source,
            catalog=catalog,
            harvest_config=harvest_config,
            images_dir=_optional_path(data.get("images_dir"), f"{where}.images_dir"),
            filter=ReferenceFilter.from_dict(data.get("filter"), f"{where}.filter"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "catalog": self.catalog, "harvest_config": self.harvest_config,
                "images_dir": self.images_dir, "filter": self.filter.to_dict()}


def _registry() -> dict[str, dict[str, Any]] | None:
    """The generator's registry as plain dicts, or None where it cannot be imported."""
    try:
        from services.generator.models import REGISTRY
    except Exception:  # the generator is optional for reading a benchmark
        return None
    return {name: config.to_dict() for name, config in REGISTRY.items()}


_MODEL_TYPES: dict[str, tuple[str, Any]] = {
    "name": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip())),
    "pipeline": ("a Hugging Face id, a folder or tiny:<name>", lambda v: isinstance(v, str) and bool(v.strip())),
    "pipeline_class": ("a diffusers pipeline class name or null", lambda v: v is None or isinstance(v, str)),
    "revision": ("a weights revision (commit, tag or branch) or null", lambda v: v is None or isinstance(v, str)),
    "variant": ("a weights variant (e.g. fp16) or null", lambda v: v is None or isinstance(v, str)),
    "scheduler": ("a diffusers scheduler class name or null", lambda v: v is None or isinstance(v, str)),
    "dtype": (f"one of {', '.join(DTYPES)}", lambda v: v in DTYPES),
    "steps": ("an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "guidance": ("a finite number >= 0", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                 and math.isfinite(v) and v >= 0),
    "height": ("an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "width": ("an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "negative_prompt": ("true or false", lambda v: isinstance(v, bool)),
    "safety_checker": ("true or false", lambda v: isinstance(v, bool)),
    "call_kwargs": ("a mapping", lambda v: isinstance(v, Mapping)),
    "description": ("a string", lambda v: isinstance(v, str)),
}


@dataclass(frozen=True)
class ModelSpec:
    """A model of the benchmark: a registry name, optionally with overrides, or a whole
    configuration. `options` holds the keys given besides the name (plain data for the
    generator's `ModelConfig.from_dict`)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str, registry_names: Sequence[str]) -> ModelSpec:
        if isinstance(data, str):
            if data not in registry_names:
                raise _fail(where, f"unknown model {data!r}; registry models: {', '.join(registry_names)} "
                                   "(or give a mapping with name and pipeline)")
            return cls(data)
        data = _mapping(data, where, MODEL_KEYS)
        name = _string(data.get("name"), f"{where}.name", allowed="the model's name")
        for key, value in data.items():
            meaning, check = _MODEL_TYPES.get(key, (None, None))
            if check is not None and not check(value):
                raise _fail(f"{where}.{key}", f"must be {meaning}; got {_describe(value)}")
        if name not in registry_names and "pipeline" not in data:
            raise _fail(f"{where}.pipeline", f"is required for {name!r}, which is not a registry model "
                                             f"({', '.join(registry_names)})")
        options = {k: copy.deepcopy(v) for k, v in data.items() if k != "name"}
        return cls(name, options)

    def config(self, registry: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """The whole configuration: the registry entry (where there is one) with the options
        over it. Without a registry, only what the file says."""
        base = dict(registry.get(self.name, {})) if registry else {}
        return {**copy.deepcopy(base), "name": self.name, **copy.deepcopy(self.options)}

    def to_dict(self) -> str | dict[str, Any]:
        return self.name if not self.options else {"name": self.name, **copy.deepcopy(self.options)}


@dataclass(frozen=True)
class EncoderSpec:
    recognition: str = "classical"
    realization: str = "classical"

    KEYS = ("recognition", "realization")

    @classmethod
    def from_dict(cls, data: Any, where: str = "encoders") -> EncoderSpec:
        data = _mapping(data, where, cls.KEYS)
        defaults = cls()
        return cls(*(_string(data.get(k, getattr(defaults, k)), f"{where}.{k}",
                             allowed=f"a scorer encoder name or {AUTO_ENCODER}") for k in cls.KEYS))

    def to_dict(self) -> dict[str, str]:
        return {"recognition": self.recognition, "realization": self.realization}


@dataclass(frozen=True)
class ThresholdSpec:
    """Overrides of the encoders' calibrated thresholds; None keeps the calibrated one."""

    recognition_static: float | None = None
    recognition_dynamic: float | None = None
    reuse: float | None = None

    KEYS = ("recognition_static", "recognition_dynamic", "reuse")

    @classmethod
    def from_dict(cls, data: Any, where: str = "thresholds") -> ThresholdSpec:
        data = _mapping(data, where, cls.KEYS)
        return cls(*(_open_unit(data.get(k), f"{where}.{k}") for k in cls.KEYS))

    def recognition(self, imagery: str) -> float | None:
        """The override for references scored with `imagery` (static or dynamic)."""
        return self.recognition_static if imagery == "static" else self.recognition_dynamic

    def to_dict(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in self.KEYS}


@dataclass(frozen=True)
class ServicesSpec:
    harvester: str = LOCAL
    generator: str = LOCAL
    scorer: str = LOCAL
    triton: str = LOCAL

    @classmethod
    def from_dict(cls, data: Any, where: str = "services") -> ServicesSpec:
        data = _mapping(data, where, SERVICES)
        return cls(*(_address(data.get(k, LOCAL), f"{where}.{k}") for k in SERVICES))

    def is_local(self, service: str) -> bool:
        return getattr(self, service) == LOCAL

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in SERVICES}


@dataclass(frozen=True)
class MlflowSpec:
    tracking_uri: str | None = None
    experiment: str | None = None

    KEYS = ("tracking_uri", "experiment")

    @classmethod
    def from_dict(cls, data: Any, where: str = "mlflow") -> MlflowSpec:
        data = _mapping(data, where, cls.KEYS)
        uri, experiment = data.get("tracking_uri"), data.get("experiment")
        if uri is not None:
            _string(uri, f"{where}.tracking_uri", allowed="a tracking URI: sqlite:///FILE, http(s)://HOST:PORT, or a folder")
        if experiment is not None:
            _string(experiment, f"{where}.experiment", allowed="an experiment name")
        return cls(uri, experiment)

    def to_dict(self) -> dict[str, str | None]:
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment}


@dataclass(frozen=True)
class ConcurrencySpec:
    harvester: int = 4
    generator: int = 2
    scorer: int = 2

    KEYS = ("harvester", "generator", "scorer")

    @classmethod
    def from_dict(cls, data: Any, where: str = "concurrency") -> ConcurrencySpec:
        data = _mapping(data, where, cls.KEYS)
        defaults = cls()
        return cls(*(_integer(data.get(k, getattr(defaults, k)), f"{where}.{k}", 1, 1024) for k in cls.KEYS))

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.KEYS}


@dataclass(frozen=True)
class RetrySpec:
    """Retries of transient failures (UNAVAILABLE, RESOURCE_EXHAUSTED, 429/5xx): `attempts`
    after the first try, waiting backoff_s * 2**k (at most max_backoff_s) before retry k."""

    attempts: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    KEYS = ("attempts", "backoff_s", "max_backoff_s")

    @classmethod
    def from_dict(cls, data: Any, where: str = "retries") -> RetrySpec:
        data = _mapping(data, where, cls.KEYS)
        defaults = cls()
        attempts = _integer(data.get("attempts", defaults.attempts), f"{where}.attempts", 0, 100)
        backoff = _number(data.get("backoff_s", defaults.backoff_s), f"{where}.backoff_s", 0.0)
        maximum = _number(data.get("max_backoff_s", defaults.max_backoff_s), f"{where}.max_backoff_s", 0.0)
        if maximum < backoff:
            raise _fail(f"{where}.max_backoff_s", f"must be >= backoff_s ({backoff:g}); got {maximum:g}")
        return cls(attempts, backoff, maximum)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0-based).

        >>> [RetrySpec(backoff_s=1.0, max_backoff_s=5.0).delay(k) for k in range(4)]
        [1.0, 2.0, 4.0, 5.0]
        """
        return min(self.max_backoff_s, self.backoff_s * 2.0**retry)

    def to_dict(self) -> dict[str, float | int]:
        return {"attempts": self.attempts, "backoff_s": self.backoff_s, "max_backoff_s": self.max_backoff_s}


def _seeds(value: Any, images_per_prompt: Any, where: str = "seeds") -> tuple[int, ...]:
    """An explicit list, or a base b (image j gets seed b + j; the same seeds for every
    reference, model and perturbation, so cells are compared on the same noise)."""
    if images_per_prompt is not None:
        _integer(images_per_prompt, "images_per_prompt", 1, 10_000)
    if isinstance(value, Mapping):
        value = _mapping(value, where, ("base",)).get("base", 0)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            raise _fail(where, "must be a base seed or a non-empty list of seeds")
        seeds = tuple(_integer(v, f"{where}[{i}]", 0, _MAX_SEED) for i, v in enumerate(value))
        repeated = sorted({v for v in seeds if seeds.count(v) > 1})
        if repeated:
            raise _fail(where, f"repeats seed{'s' if len(repeated) > 1 else ''} {', '.join(map(str, repeated))}")
        if images_per_prompt is not None and images_per_prompt != len(seeds):
            raise _fail(where, f"lists {len(seeds)} seeds but images_per_prompt is {images_per_prompt}; give one seed per image")
        return seeds
    base = _integer(0 if value is None else value, where, 0, _MAX_SEED)
    count = 2 if images_per_prompt is None else images_per_prompt
    if base + count - 1 > _MAX_SEED:
        raise _fail(where, f"base seed {base} + {count} images exceeds {_MAX_SEED}")
    return tuple(base + j for j in range(count))


# -- the benchmark -------------------------------------------------------------------------

TOP_KEYS = (
    "name", "description", "base_dir", "references", "models", "perturbations", "images_per_prompt", "seeds",
    "encoders", "thresholds", "crt_variant", "imagery", "services", "mlflow", "concurrency", "retries",
)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    references: ReferencesSpec
    models: tuple[ModelSpec, ...]
    perturbations: tuple[str, ...]
    seeds: tuple[int, ...]
    encoders: EncoderSpec = field(default_factory=EncoderSpec)
    thresholds: ThresholdSpec = field(default_factory=ThresholdSpec)
    crt_variant: str = "recognized_images"
    imagery: str = "by_kind"
    services: ServicesSpec = field(default_factory=ServicesSpec)
    mlflow: MlflowSpec = field(default_factory=MlflowSpec)
    concurrency: ConcurrencySpec = field(default_factory=ConcurrencySpec)
    retries: RetrySpec = field(default_factory=RetrySpec)
    description: str = ""
    base_dir: str | None = None  # where relative paths are resolved; not part of the content

    @property
    def images_per_prompt(self) -> int:
        return len(self.seeds)

    @property
    def experiment(self) -> str:
        """The MLflow experiment: `mlflow.experiment`, else the benchmark's name."""
        return self.mlflow.experiment or self.name

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, base_dir: str | Path | None = None) -> BenchmarkSpec:
        data = _mapping(data, "", TOP_KEYS)
        if not data:
            raise BenchmarkError("a benchmark needs at least a name")
        name = _string(data.get("name"), "name", _NAME, "letters, digits, _ . - (starting with a letter or digit)")
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise _fail("description", f"must be a string; got {_describe(description)}")
        if base_dir is None and data.get("base_dir") is not None:
            base_dir = _string(data["base_dir"], "base_dir", allowed="a folder")

        references = data.get("references")
        if references is None:
            references = {"source": "catalog", "catalog": str(DEFAULT_BENCHMARK.parent / "references.json")}
        references = ReferencesSpec.from_dict(references)

        models_data = data.get("models", ["tiny-sd", "tiny-flux"])
        if isinstance(models_data, (str, Mapping)) or not isinstance(models_data, Sequence) or not models_data:
            raise _fail("models", f"must be a non-empty list of registry names or model mappings; got {_describe(models_data)}")
        registry = _registry()
        registry_names = tuple(registry) if registry is not None else KNOWN_MODELS
        models = tuple(ModelSpec.from_dict(m, f"models[{i}]", registry_names) for i, m in enumerate(models_data))
        names = [m.name for m in models]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise _fail("models", f"names {', '.join(repeated)} more than once; give each configuration its own name")

        perturbations = data.get("perturbations", list(BUILT_IN_PERTURBATIONS))
        if isinstance(perturbations, str) or not isinstance(perturbations, Sequence) or not perturbations:
            raise _fail("perturbations", f"must be a non-empty list of {', '.join(BUILT_IN_PERTURBATIONS)} or custom names; "
                                         f"got {_describe(perturbations)}")
        perturbations = tuple(
            _string(p, f"perturbations[{i}]", _PERTURBATION,
                    f"{', '.join(BUILT_IN_PERTURBATIONS)} or a custom name of lower-case letters, digits, _ and -")
            for i, p in enumerate(perturbations)
        )
        repeated = sorted({p for p in perturbations if perturbations.count(p) > 1})
        if repeated:
            raise _fail("perturbations", f"repeats {', '.join(repeated)}")

        return cls(
            name=name,
            description=description,
            base_dir=str(base_dir) if base_dir is not None else None,
            references=references,
            models=models,
            perturbations=perturbations,
            seeds=_seeds(data.get("seeds"), data.get("images_per_prompt")),
            encoders=EncoderSpec.from_dict(data.get("encoders")),
            thresholds=ThresholdSpec.from_dict(data.get("thresholds")),
            crt_variant=_choice(data.get("crt_variant", "recognized_images"), "crt_variant", CRT_VARIANTS),
            imagery=_choice(data.get("imagery", "by_kind"), "imagery", IMAGERIES),
            services=ServicesSpec.from_dict(data.get("services")),
            mlflow=MlflowSpec.from_dict(data.get("mlflow")),
            concurrency=ConcurrencySpec.from_dict(data.get("concurrency")),
            retries=RetrySpec.from_dict(data.get("retries")),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> BenchmarkSpec:
        """Reads a YAML (or JSON) benchmark file; errors start with the file's name."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise BenchmarkError(f"no benchmark file {str(path)!r}") from None
        except OSError as error:
            raise BenchmarkError(f"{path}: cannot read: {error.strerror or error}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise BenchmarkError(f"{path}{at}: not valid YAML: {problem}") from None
        if not isinstance(data, Mapping):
            raise BenchmarkError(f"{path}: must be a mapping of benchmark keys ({', '.join(TOP_KEYS)})")
        try:
            return cls.from_dict(data, base_dir=path.resolve().parent)
        except BenchmarkError as error:
            raise BenchmarkError(f"{path}: {error}") from None

    @classmethod
    def default(cls) -> BenchmarkSpec:
        """The embedded default benchmark (`flows/benchmarks/default.yaml`)."""
        return cls.from_file(DEFAULT_BENCHMARK)

    # -- paths -------------------------------------------------------------------------------
    def path(self, value: str | None) -> Path | None:
        """A path of the file, resolved against `base_dir` when relative (and `~` expanded)."""
        if value is None:
            return None
        path = Path(os.path.expanduser(value))
        if not path.is_absolute() and self.base_dir is not None:
            path = Path(self.base_dir) / path
        return path

    # -- writing -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The spec as written (registry names stay names); `from_dict` reads it back."""
        return {
            "name": self.name,
            "description": self.description,
            "base_dir": self.base_dir,
            "references": self.references.to_dict(),
            "models": [m.to_dict() for m in self.models],
            "perturbations": list(self.perturbations),
            "images_per_prompt": self.images_per_prompt,
            "seeds": list(self.seeds),
            "encoders": self.encoders.to_dict(),
            "thresholds": self.thresholds.to_dict(),
            "crt_variant": self.crt_variant,
            "imagery": self.imagery,
            "services": self.services.to_dict(),
            "mlflow": self.mlflow.to_dict(),
            "concurrency": self.concurrency.to_dict(),
            "retries": self.retries.to_dict(),
        }

    def model_configs(self) -> list[dict[str, Any]]:
        """Each model's whole configuration: registry defaults with the file's overrides."""
        registry = _registry()
        return [m.config(registry) for m in self.models]

    def resolved(self) -> dict[str, Any]:
        """Every setting with its default filled in and every model expanded to its whole
        configuration: what gets recorded with each run (`from_dict` reads it back)."""
        data = self.to_dict()
        data["models"] = self.model_configs()
        data["mlflow"] = {**data["mlflow"], "experiment": self.experiment}
        return data

    def content(self) -> dict[str, Any]:
        """The resolved spec without what cannot change a result (`OPERATIONAL_KEYS`, and
        the models' descriptions)."""
        content = {k: v for k, v in self.resolved().items() if k not in OPERATIONAL_KEYS}
        content["models"] = [{k: v for k, v in m.items() if k != "description"} for m in content["models"]]
        return content

    def content_hash(self) -> str:
        """SHA-256 of `content()` as canonical JSON: equal for equal benchmarks, however
        they were written (key order, a base seed or its list, a registry name or its
        configuration), and wherever their services and MLflow store are."""
        return hashlib.sha256(canonical_json(self.content()).encode()).hexdigest()

    def to_yaml(self) -> str:
        """The resolved spec as YAML (the file recorded beside results and in MLflow)."""
        return yaml.safe_dump(self.resolved(), sort_keys=False, allow_unicode=True)

    def with_overrides(self, **sections: Any) -> BenchmarkSpec:
        """A copy with whole top-level values replaced and validated again, e.g.
        `spec.with_overrides(mlflow={"tracking_uri": uri})` or a new `references` mapping."""
        data = self.to_dict()
        for key, value in sections.items():
            if key not in TOP_KEYS:
                raise _fail(key, f"unknown key; allowed: {', '.join(TOP_KEYS)}")
            data[key] = value
        if "seeds" in sections and "images_per_prompt" not in sections:
            data.pop("images_per_prompt")
        if "images_per_prompt" in sections and "seeds" not in sections:
            data["seeds"] = self.seeds[0]
        return BenchmarkSpec.from_dict(data, base_dir=self.base_dir)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN: the form hashed for content keys.

    >>> canonical_json({"b": 1, "a": [1.0, None]})
    '{"a":[1.0,null],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def default_images_dir() -> Path | None:
    """The offline image source when neither the file nor the command names one:
    `$ICONICITY_SHARED_DATA/references`, else `../shared/data/references` beside the
    repository, where it exists; None otherwise."""
    root = os.environ.get("ICONICITY_SHARED_DATA")
    candidate = Path(root) / "references" if root else Path(__file__).resolve().parents[2] / "shared" / "data" / "references"
    return candidate if candidate.is_dir() else None


def load_benchmark(path: str | Path | None = None) -> BenchmarkSpec:
    """The benchmark at `path`; `default` and `paper` name the shipped ones; None is default."""
    if path is None or str(path) == "default":
        return BenchmarkSpec.from_file(DEFAULT_BENCHMARK)
    if str(path) == "paper":
        return BenchmarkSpec.from_file(PAPER_BENCHMARK)
    return BenchmarkSpec.from_file(path)
