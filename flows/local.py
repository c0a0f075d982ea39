"""Starting a benchmark's services on loopback: what the spec's `services` says is `local`.

`LocalServices(spec, out_dir, images_dir)` is a context manager that yields `Addresses`
(harvester, generator, scorer and Triton as `host:port`, and the MLflow tracking URI). For
each service that the spec marks `local` it starts one on 127.0.0.1 with a free port; a
service given as `host:port` is used as it is and not touched. What it started is stopped in
reverse order on exit, also when the block (or a later start) fails.

- harvester: over `OUT/catalog`, harvested offline (merged again on each run, so a rerun
  reuses it) from the spec's references catalog and the offline images folder; a
  `references.catalog` that is already a harvested catalog folder is served as it is, and
  `source: harvester` harvests with the spec's `harvest_config` file.
- Triton: the spec's models in a model repository under `OUT/triton` (tiny pipelines are
  built once under `$ICONICITY_MODELS` or `~/.cache/iconicity/models`); a model whose weights
  are not here (not a tiny pipeline, not a folder, not in the Hugging Face cache) is left out
  and listed in `Addresses.unavailable_models`: its cells fail, the rest of the matrix runs.
  Triton loads the models one after another, in the spec's order (`TritonServer.load_in_order`),
  and the services are up once its server is: the first model's cells start while the next
  model loads, and a model that cannot load fails only its own cells.
- generator: in front of that Triton (or of the spec's `triton` address), knowing the spec's
  model configurations; a request for a model still loading waits for it.
- scorer: over the harvested catalog folder, with the spec's encoders and a disk embedding
  cache in `OUT/embedding-cache`.
- MLflow: `--tracking-uri`, else the spec's `mlflow.tracking_uri`, else
  `sqlite:///OUT/mlflow.db`; a new sqlite store is made while Triton starts.

The Prefect API is not one of these: `iconicity run` uses the one `PREFECT_API_URL` (or the
active Prefect profile) names, else starts a temporary one (`flows.prefect_api`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.spec import AUTO_ENCODER, LOCAL, BenchmarkSpec, default_images_dir

log = logging.getLogger("iconicity.flows")

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Addresses:
    """Where the benchmark's services are (`host:port`) and its MLflow store."""

    harvester: str
    generator: str
    scorer: str
    triton: str | None
    tracking_uri: str
    started: tuple[str, ...] = ()  # what LocalServices started, in order
    catalog_dir: str | None = None  # the harvested catalog folder, where one was made here
    images_dir: str | None = None  # the offline image source used
    unavailable_models: Mapping[str, str] = field(default_factory=dict)  # model -> why Triton does not serve it

    def to_dict(self) -> dict[str, Any]:
        return {"harvester": self.harvester, "generator": self.generator, "scorer": self.scorer,
                "triton": self.triton, "tracking_uri": self.tracking_uri}


def tracking_uri_for(spec: BenchmarkSpec, out_dir: str | Path, tracking_uri: str | None = None) -> str:
    """`tracking_uri`, else the spec's, else a sqlite store in `out_dir`."""
    uri = tracking_uri or spec.mlflow.tracking_uri
    if uri:
        return uri
    return f"sqlite:///{(Path(out_dir).resolve() / 'mlflow.db')}"


def images_dir_for(spec: BenchmarkSpec, images_dir: str | Path | None = None) -> Path | None:
    """The offline image source: the argument, else the spec's `references.images_dir`,
    else `flows.spec.default_images_dir()`."""
    if images_dir is not None:
        return Path(images_dir)
    if spec.references.images_dir is not None:
        return spec.path(spec.references.images_dir)
    return default_images_dir()


def harvest_catalog(spec: BenchmarkSpec, out_dir: str | Path, images_dir: str | Path | None = None) -> Path:
    """The harvested catalog folder the local harvester and scorer serve (made or merged
    into `OUT/catalog`, or the spec's own harvested folder)."""
    from services.harvester.catalog import Catalog
    from services.harvester.config import HarvestConfig
    from services.harvester.plan import run_config

    references = spec.references
    if references.source == "harvester":
        if references.harvest_config is None:
            raise ValueError("references.harvest_config: a local harvester needs a harvest configuration file")
        config = HarvestConfig.from_file(spec.path(references.harvest_config))
    else:
        source = spec.path(references.catalog)
        if source is not None and source.is_dir() and (source / "catalog.sqlite").exists():
            return source
        if source is None or not source.is_file():
            raise FileNotFoundError(f"references.catalog: no catalog file {str(source)!r}")
        folder = images_dir_for(spec, images_dir)
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"no images folder {str(folder)!r}")
        config = HarvestConfig(source="offline", catalog_file=source, images_dir=Path(folder) if folder else None)
    target = Path(out_dir) / "catalog"
    summaries = run_config(config, Catalog(target))
    failed = [s for s in summaries if s.status != "complete"]
    if failed:
        raise RuntimeError(f"harvest of the references failed: {failed[0].error or failed[0].status}")
    return target


def servable_models(configs: list[Any]) -> tuple[list[Any], dict[str, str]]:
    """The model configurations whose weights can be loaded here, and why the others cannot."""
    ok, missing = [], {}
    for config in configs:
        if config.tiny is not None or Path(os.path.expanduser(config.pipeline)).is_dir():
            ok.append(config)
            continue
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(config.pipeline, revision=config.revision, local_files_only=True)
            ok.append(config)
        except Exception as error:  # not in the cache, no such repository, hub not installed
            missing[config.name] = f"weights {config.pipeline!r} are not here ({type(error).__name__})"
    return ok, missing


class LocalServices:
    """The services of `spec` that are `local`, started on loopback (see the module doc).

    >>> # with LocalServices(spec, "runs/default") as addresses: ...  (see tests/test_benchmark_flow.py)
    """

    def __init__(self, spec: BenchmarkSpec, out_dir: str | Path, images_dir: str | Path | None = None, *,
                 tracking_uri: str | None = None, models_root: str | Path | None = None,
                 triton_startup_timeout: float = 600.0, while_starting: Callable[[], Any] | None = None) -> None:
        self.spec = spec
        self.while_starting = while_starting  # called once Triton is launching, before the rest starts
        self.out_dir = Path(out_dir)
        self.images_dir = images_dir
        self.tracking_uri = tracking_uri
        self.models_root = models_root
        self.triton_startup_timeout = triton_startup_timeout
        self._stack: contextlib.ExitStack | None = None
        self.addresses: Addresses | None = None
        self.triton = None  # the TritonServer, where one was started
        self.generator_servicer = None

    def __enter__(self) -> Addresses:
        stack = contextlib.ExitStack()
        try:
            self.addresses = self._start(stack)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self.addresses

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    # -- starting ------------------------------------------------------------------------
    def _start(self, stack: contextlib.ExitStack) -> Addresses:
        spec, services = self.spec, self.spec.services
        self.out_dir.mkdir(parents=True, exist_ok=True)
        started: list[str] = []
        catalog_dir = None
        images = images_dir_for(spec, self.images_dir)
        configs: list[Any] = []
        triton_start = None
        if services.is_local("generator"):
            from services.generator.models import ModelConfig, resolve_models

            configs = resolve_models([ModelConfig.from_dict(c) for c in spec.model_configs()])
            if services.is_local("triton"):
                # Triton takes the longest to come up (its model processes import torch and
                # diffusers): it starts in the background while the catalog is harvested and
                # the other services start.
                triton_start = self._start_triton_in_background(stack, configs)
        if self.while_starting is not None:
            self.while_starting()
        needs_catalog = services.is_local("harvester") or services.is_local("scorer")
        if needs_catalog:
            catalog_dir = harvest_catalog(spec, self.out_dir, images)

        harvester = services.harvester
        if services.is_local("harvester"):
            from services.harvester.server import create_harvester_server

            server, port, _ = create_harvester_server(f"{LOOPBACK}:0", catalog=catalog_dir)
            self._serve(stack, server, "harvester")
            harvester = f"{LOOPBACK}:{port}"
            started.append("harvester")

        # The scorer (torch, its encoders) starts before the wait for Triton's models.
        scorer = services.scorer
        if services.is_local("scorer"):
            from services.scorer.server import create_scorer_server

            encoders = spec.encoders
            server, port, _ = create_scorer_server(
                f"{LOOPBACK}:0", catalog=catalog_dir,
                recognition_encoder=None if encoders.recognition == AUTO_ENCODER else encoders.recognition,
                realization_encoder=None if encoders.realization == AUTO_ENCODER else encoders.realization,
                cache_dir=self.out_dir / "embedding-cache")
            self._serve(stack, server, "scorer")
            scorer = f"{LOOPBACK}:{port}"
            started.append("scorer")

        tracking_uri = tracking_uri_for(spec, self.out_dir, self.tracking_uri)
        # Importing MLflow and making a new sqlite store take seconds of CPU, spent here
        # while Triton starts rather than in the flow.
        from flows.tracking import prepare_store

        prepare_store(tracking_uri)

        triton_url: str | None = None if services.is_local("triton") else services.triton
        unavailable: dict[str, str] = {}
        loading: dict[str, Future] = {}
        generator = services.generator
        if services.is_local("generator"):
            if triton_start is not None:
                self.triton, unavailable, loading = triton_start.result()
                triton_url = self.triton.grpc_url
                started.append("triton")
            from services.generator.server import create_generator_server

            server, port, servicer = create_generator_server(f"{LOOPBACK}:0", triton_url=triton_url,
                                                             models={c.name: c for c in configs}, loading=loading)
            stack.callback(servicer.generator.close)
            self._serve(stack, server, "generator")
            self.generator_servicer = servicer
            generator = f"{LOOPBACK}:{port}"
            started.append("generator")
        elif services.is_local("triton"):
            raise ValueError("services.triton: local Triton needs a local generator (the generator is "
                             f"{services.generator}); give triton's address or make the generator local")

        return Addresses(
            harvester=harvester, generator=generator, scorer=scorer, triton=triton_url,
            tracking_uri=tracking_uri, started=tuple(started),
            catalog_dir=str(catalog_dir) if catalog_dir else None, images_dir=str(images) if images else None,
            unavailable_models=unavailable,
        )

    def _serve(self, stack: contextlib.ExitStack, server: Any, name: str) -> None:
        from services.common.server import shutdown

        server.start()
        stack.callback(shutdown, server, 2.0)
        log.info("started %s", name)

    def _start_triton_in_background(self, stack: contextlib.ExitStack, configs: list[Any]) -> Future:
        """Launches Triton now, loading its models one after another, and waits on a thread
        for the server (not its models) to be up: the future's result is the server, the
        models it cannot serve here (with why) and each served model's loading future. The
        stack stops it, also when something else fails first. Registered before the other
        services, so Triton stops after the generator that uses it."""
        server, unavailable = self._triton_server(configs)
        stack.callback(server.close)
        loading = server.load_in_order()
        pool = ThreadPoolExecutor(1, thread_name_prefix="triton-start")
        future = pool.submit(lambda: (server.wait_up(), unavailable, loading))
        pool.shutdown(wait=False)
        return future

    def _triton_server(self, configs: list[Any]) -> tuple[Any, dict[str, str]]:
        """Builds the model repository for Triton; returns the server (not launched) and the
        models it cannot serve here (with why)."""
        from services.generator.triton_server import TritonServer, build_model_repository

        servable, unavailable = servable_models(configs)
        if not servable:
            raise RuntimeError("no model of the benchmark can be served here: "
                               + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
        root = self.out_dir / "triton"
        repository = build_model_repository(servable, root / "repository", models_root=self.models_root)
        server = TritonServer(repository, [c.name for c in servable], workdir=root / "work",
                              startup_timeout=self.triton_startup_timeout,
                              env={"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
        return server, unavailable


@contextlib.contextmanager
def local_services(spec: BenchmarkSpec, out_dir: str | Path, images_dir: str | Path | None = None,
                   **options: Any) -> Iterator[Addresses]:
    """`LocalServices` as a function."""
    with LocalServices(spec, out_dir, images_dir, **options) as addresses:
        yield addresses


__all__ = ["LOCAL", "Addresses", "LocalServices", "harvest_catalog", "images_dir_for", "local_services",
           "servable_models", "tracking_uri_for"]
