"""Scheduled benchmarks: the flow deployments run, and `iconicity schedule`.

`scheduled_benchmark` (entrypoint `flows/schedule.py:scheduled_benchmark`, see `prefect.yaml`)
does what `iconicity run` does (starts the local services, runs the `benchmark` flow as a
subflow, stops them) with JSON parameters, so a worker can run it.

    iconicity schedule --config FILE --cron EXPR [--name NAME] [--pool POOL] [--out DIR]

With `--pool` it registers a deployment of `scheduled_benchmark` on that work pool (a
`process` pool locally: `prefect work-pool create POOL --type process`, then
`prefect worker start --pool POOL`) with the Prefect API that `PREFECT_API_URL` names; without
it, it serves the deployment from this process (`flow.serve`) until interrupted.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from prefect import flow

import flows.benchmark  # noqa: F401  (sets the environment Prefect reads before it is imported)

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/schedule.py:scheduled_benchmark"


@flow(name="scheduled-benchmark", validate_parameters=True, log_prints=True)
def scheduled_benchmark(config: str = "default", out: str | None = None, images_dir: str | None = None,
                        tracking_uri: str | None = None) -> dict[str, Any]:
    """A benchmark file run end to end with local services; returns the result summary."""
    from flows.run import execute, report
    from flows.spec import load_benchmark

    spec = load_benchmark(config)
    result = execute(spec, Path(out or Path("runs") / spec.name).resolve(),
                     images_dir=Path(images_dir) if images_dir else None, tracking_uri=tracking_uri, progress=False)
    report(result)  # raises with the failed cells: the flow run then fails
    return result.to_dict()


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `iconicity schedule`."""
    parser.add_argument("--config", metavar="FILE", default="default", help="benchmark file (default: %(default)s)")
    parser.add_argument("--cron", metavar="EXPR", required=True, help="cron schedule, e.g. '0 3 * * *'")
    parser.add_argument("--name", metavar="NAME", help="deployment name (default: the benchmark's name)")
    parser.add_argument("--pool", metavar="POOL", help="register on this work pool instead of serving from here")
    parser.add_argument("--out", metavar="DIR", help="results folder of each run (default: runs/<benchmark name>)")
    parser.add_argument("--images-dir", metavar="DIR", help="offline reference images")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI")


def _api_url() -> str | None:
    """The Prefect API this process talks to (PREFECT_API_URL or the active profile's)."""
    try:
        from prefect.settings import get_current_settings

        return get_current_settings().api.url or None
    except Exception:  # settings that do not load: the variable alone
        return os.environ.get("PREFECT_API_URL") or None


def run_schedule(args: argparse.Namespace) -> int:
    from prefect.client.schemas.schedules import CronSchedule

    from flows.spec import load_benchmark

    spec = load_benchmark(args.config)  # a broken file fails now, not at 3 am
    try:
        CronSchedule(cron=args.cron)
    except ValueError:
        raise ValueError(f"--cron: not a cron expression: {args.cron!r}") from None
    config = str(Path(args.config).resolve()) if args.config not in ("default", "paper") else args.config
    parameters = {"config": config, "out": args.out and str(Path(args.out).resolve()),
                  "images_dir": args.images_dir and str(Path(args.images_dir).resolve()),
                  "tracking_uri": args.tracking_uri}
    name = args.name or spec.name
    if args.pool:
        if not _api_url():
            raise RuntimeError("--pool needs a Prefect server: set PREFECT_API_URL (prefect server start)")
        deployment_id = scheduled_benchmark.from_source(source=str(REPO), entrypoint=ENTRYPOINT).deploy(
            name=name, work_pool_name=args.pool, cron=args.cron, parameters=parameters, print_next_steps=False)
        print(f"deployment scheduled-benchmark/{name} ({deployment_id}) on pool {args.pool}: {args.cron}")
        return 0
    print(f"serving scheduled-benchmark/{name}: {args.cron} (Ctrl-C stops)", flush=True)
    scheduled_benchmark.serve(name=name, cron=args.cron, parameters=parameters)
    return 0


__all__ = ["ENTRYPOINT", "add_schedule_arguments", "run_schedule", "scheduled_benchmark"]
