"""`iconicity run`: a whole benchmark on this machine, from one command.

    iconicity run [--config FILE] [--images-dir DIR] [--tracking-uri URI] [--out DIR]

Without `--config` it runs the embedded default benchmark (`flows/benchmarks/default.yaml`).
It starts on loopback what the benchmark marks `local` (harvester, Triton and the generator,
scorer; `flows.local.LocalServices`), a temporary Prefect API where none is configured
(`flows.prefect_api`; its log is `OUT/prefect-api.log`) and an MLflow store
(`--tracking-uri`, else the file's, else `sqlite:///OUT/mlflow.db`), runs the `benchmark` flow with a progress bar on stderr, stops
what it started, and prints where everything is. Results go to `--out` (default
`runs/<benchmark name>`); running the same command again continues a killed run. Once
the cells have run, the `analyze` flow (`flows.analyze`) validates the encoders on the
benchmark's references and writes `OUT/report.html`, logged to the MLflow parent run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("iconicity.flows")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `iconicity run`."""
    parser.add_argument("--config", metavar="FILE",
                        help="benchmark file (YAML); `default` or `paper` name the shipped ones (default: default)")
    parser.add_argument("--images-dir", metavar="DIR", type=Path,
                        help="offline reference images, one folder per slug (default: the file's references.images_dir, "
                             "else $ICONICITY_SHARED_DATA/references or ../shared/data/references)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: the file's mlflow.tracking_uri, else sqlite:///OUT/mlflow.db)")
    parser.add_argument("--out", metavar="DIR", type=Path, help="results folder (default: runs/<benchmark name>)")
    parser.add_argument("--execution-id", metavar="ID",
                        help="MLflow parent run identity (default: from the benchmark's content, so a rerun continues it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-validation", action="store_true",
                        help="leave the encoders' validation out of the report (it takes seconds with the classical "
                             "encoder, minutes with CLIP and DINO on many works)")


class _Progress:
    """A tqdm bar over images generated and scored (stored ones count at once)."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled
        self._lock = threading.Lock()

    def __call__(self, event: str, count: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            if event == "planned":
                from tqdm import tqdm

                self.bar = tqdm(total=count, desc="images generated + scored", unit="step", file=sys.stderr,
                                dynamic_ncols=True)
            elif self.bar is not None and event in ("generated", "scored", "skipped"):
                self.bar.update(count)

    def close(self) -> None:
        with self._lock:
            if self.bar is not None:
                self.bar.close()


def run_run(args: argparse.Namespace) -> int:
    """Runs the benchmark; prints where the results are. 1 when some cells failed."""
    from flows.spec import load_benchmark

    spec = load_benchmark(args.config)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    out = out.resolve()
    return report(execute(spec, out, images_dir=args.images_dir, tracking_uri=args.tracking_uri,
                          execution_id=getattr(args, "execution_id", None),
                          progress=not getattr(args, "no_progress", False),
                          validation=not getattr(args, "no_validation", False)))


def execute(spec: Any, out: Path, *, images_dir: Path | None = None, tracking_uri: str | None = None,
            execution_id: str | None = None, progress: bool = True, analysis: bool = True,
            validation: bool = True) -> Any:
    """Starts the local services, runs the benchmark flow, stops them, then (unless
    `analysis` is False) the `analyze` flow: validation and report; returns the
    `BenchmarkResult` (with `addresses`, `wall_seconds` and `analysis` attributes added)."""
    from flows.analyze import run_analysis
    from flows.benchmark import progress_listener, run_benchmark
    from flows.local import LocalServices, images_dir_for
    from flows.prefect_api import PrefectAPI

    started = time.perf_counter()
    source = images_dir_for(spec, images_dir)
    if spec.services.is_local("harvester") or spec.services.is_local("scorer"):
        if source is None:
            raise ValueError("no offline reference images: pass --images-dir DIR (one folder per slug)")
        if not source.is_dir():
            raise FileNotFoundError(f"no images folder {str(source)!r}")
        print(f"offline: reference images from {source}", file=sys.stderr, flush=True)
    local = [s for s in ("harvester", "triton", "generator", "scorer") if spec.services.is_local(s)]
    if local:
        print(f"starting on loopback: {', '.join(local)} ...", file=sys.stderr, flush=True)
    bar = _Progress(progress)
    out.mkdir(parents=True, exist_ok=True)
    prefect = PrefectAPI(log_file=out / "prefect-api.log")
    with contextlib.ExitStack() as services:
        # Prefect's API comes up while the services start, once Triton (the slowest) is
        # launching: importing Prefect holds the GIL for seconds.
        addresses = services.enter_context(LocalServices(spec, out, source, tracking_uri=tracking_uri,
                                                         while_starting=prefect.start_in_background))
        for name, why in addresses.unavailable_models.items():
            print(f"model {name} is not served here: {why}", file=sys.stderr, flush=True)
        prefect.ready()
        try:
            with progress_listener(bar), prefect.flow_settings():
                result = run_benchmark(spec, out, addresses.to_dict(), execution_id=execution_id)
        finally:
            bar.close()
        # The analysis needs none of the services: they stop while it runs (Triton takes
        # seconds to unload its models).
        stopping = _close_in_background(services.pop_all())
    result.addresses = addresses
    result.analysis, result.analysis_error = None, None
    try:
        if analysis and len(result.failed) < len(result.cells):  # a report of what completed
            print("writing the report ...", file=sys.stderr, flush=True)
            try:
                with prefect.flow_settings():
                    result.analysis = run_analysis(out, spec, references_dir=addresses.catalog_dir,
                                                   tracking_uri=result.tracking_uri, validate=validation)
            except Exception as error:  # the results stand without their report: say where they are first
                result.analysis_error = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    finally:
        stopping.join()
    result.wall_seconds = time.perf_counter() - started
    return result


def _close_in_background(stack: contextlib.ExitStack) -> threading.Thread:
    """`stack.close()` on a thread (joined by the caller); a failure to stop is logged."""
    def close() -> None:
        try:
            stack.close()
        except Exception:  # noqa: BLE001 - the results are written; say what did not stop
            log.exception("stopping the local services failed")

    thread = threading.Thread(target=close, name="services-stop")
    thread.start()
    return thread


def report(result: Any, stream=None) -> int:
    """Prints where everything is; raises (with the failed cells) when some cells failed, or
    when the report could not be written."""
    stream = stream or sys.stdout
    out = Path(result.out_dir)
    print(f"benchmark {result.name}: {len(result.cells) - len(result.failed)} of {len(result.cells)} cells completed "
          f"over {len(result.references)} references in {getattr(result, 'wall_seconds', result.seconds):.1f} s",
          file=stream)
    print(f"results:        {out}", file=stream)
    print(f"  store:        {out / 'results'}", file=stream)
    for cell in result.cells:
        if cell.status == "completed":
            m = cell.metrics
            print(f"  {cell.cell:<28} CRA {m.get('cra', float('nan')):.3f}  VR {m.get('vr', float('nan')):.3f}  "
                  f"VI {m.get('vi', float('nan')):.3f}  CRT {m.get('crt', float('nan')):.3f}  "
                  f"{cell.images_file}", file=stream)
        else:
            print(f"  {cell.cell:<28} FAILED: {cell.error}", file=stream)
    analysis = getattr(result, "analysis", None)
    if analysis is not None:
        print(f"report:         {analysis.report}", file=stream)
        if analysis.validation_note:
            print(f"  validation:   skipped ({analysis.validation_note})", file=stream)
    elif getattr(result, "analysis_error", None):
        print(f"report:         not written: {result.analysis_error}", file=stream)
    print(f"MLflow:         {result.tracking_uri} (experiment {result.experiment!r}, parent run {result.parent_run_id})",
          file=stream)
    uri = result.tracking_uri
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        print(f"browse:         mlflow ui --backend-store-uri {uri}", file=stream)
    else:
        print(f"browse:         open {uri}", file=stream)
    with contextlib.suppress(Exception):
        stream.flush()
    if result.failed:
        raise RuntimeError(f"{len(result.failed)} of {len(result.cells)} cells failed: "
                           + "; ".join(f"{c.cell}: {c.error}" for c in result.failed))
    if getattr(result, "analysis_error", None):
        raise RuntimeError(f"the benchmark completed but its report failed: {result.analysis_error}")
    return 0


__all__ = ["add_run_arguments", "execute", "report", "run_run"]
