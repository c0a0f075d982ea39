"""Orchestration overhead of `iconicity run`: its wall time against the generation and scoring
compute it contains, measured in the same run.

It runs `iconicity run` (the console script's own `entry`, in a child process: `--config
default`, a fresh output folder, no progress bar) and times it from the parent, from the
child's start to its exit. The child wraps three calls with a clock (a few microseconds):
`LocalServices.__enter__` (the services started: harvest, Triton, generator, scorer),
`run_benchmark` (the Prefect flow) and `run_analysis` (the `analyze` flow), so the wall time
splits into

- startup: process start, imports, the offline harvest, the MLflow store and the services
  coming up (Triton's server, not its models: they load one after another while the flow
  runs, the first model's cells waiting for it), then whatever is left of the wait for
  Prefect's temporary API (`prefect_wait_s`);
- flow: `run_benchmark`, of which `summary.json`'s `seconds` is the flow function's own body
  (the rest is Prefect creating the flow run, waiting for its temporary API);
- analysis: the `analyze` flow (validation of the encoders on the references, the report),
  while the services stop on a thread;
- teardown: what is left after the analysis: the services' stop, the process's exit.

The compute is what `summary.json` records: `generation_seconds` (per image, Triton's
`ELAPSED_MS` of the batch it ran in divided by the batch size: the model's compute inside
Triton) plus `scoring_seconds` (per ScoreImages call, the client-side wall time of the RPC
divided by its images: the scorer's compute plus the gRPC round trip and any queueing in the
scorer). Generation and scoring run concurrently (2 requests in flight per service), so their
sum can count overlapping time twice.

`cpu_s` is the CPU time of the whole run, every process it waited for included (Triton and
its model processes, Prefect's API): steadier than the ratio on a shared machine, where the
contended compute in the ratio's denominator grows and shrinks with everything beside it.
`overhead_ratio_floor` is `cpu_s` over the usable cores over the compute: the ratio if every
core were busy from the run's start to its end, below which no ordering of the same CPU work
goes; `unused_core_s` is the core-seconds the run did not use (wall x cores - CPU: idle, or
taken by other processes on a shared machine). The gap between the two ratios is the
scheduling's (and the neighbours'); the floor is set by the CPU the run spends.

What persists between runs on a machine, as between a schedule's runs: the tiny pipelines
(`~/.cache/iconicity/models`, built by the first run) and the encoders' validation
(`~/.cache/iconicity/validation`, by provenance). `validation_cached` says whether this run
reused it; `--cold-validation` gives the child an empty cache folder, as on a first run.

    .venv/bin/python benchmarks/orchestration.py            # the default benchmark, about 1 min on 2 cores
    .venv/bin/python benchmarks/orchestration.py --quick    # 1 reference x tiny-sd x 1 prompt x 1 image

The last line: `overhead_ratio=... wall_s=... compute_s=...` then the other figures
(`overhead_ratio` = wall over compute, startup, report and teardown included;
`overhead_ratio_no_report` = the same without the `analyze` flow;
`overhead_ratio_longest` = wall over the longer of generation and scoring, which does not
count their overlap twice;
`overhead_ratio_no_startup` = the flow's wall (`run_benchmark`) over compute;
`overhead_ratio_no_startup_longest` = the flow's wall over the longer of generation and
scoring, which does not count their overlap twice). Expected: overhead_ratio at most 1.25.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from services.common.machine import usable_cpus  # noqa: E402

QUICK_REFERENCE = "the_great_wave_off_kanagawa"


def child(out: Path, config: str, timings: Path) -> int:
    """`iconicity run` with clocks around its three phases (see the module doc)."""
    marks: dict[str, float] = {"child_start": time.time()}

    def mark(name: str) -> None:
        marks[name] = time.time()
        timings.write_text(json.dumps(marks))

    import flows.analyze
    import flows.benchmark
    import flows.local
    from services.cli import entry

    enter, exit_, run = flows.local.LocalServices.__enter__, flows.local.LocalServices.__exit__, \
        flows.benchmark.run_benchmark
    analyze = flows.analyze.run_analysis

    def timed_enter(self):
        mark("services_start")
        try:
            return enter(self)
        finally:
            mark("services_up")

    def timed_exit(self, *exc):
        mark("services_stop")
        try:
            return exit_(self, *exc)
        finally:
            mark("services_down")

    def timed_run(*args, **kwargs):
        mark("flow_start")
        try:
            return run(*args, **kwargs)
        finally:
            mark("flow_end")

    def timed_analysis(*args, **kwargs):
        mark("analysis_start")
        try:
            return analyze(*args, **kwargs)
        finally:
            mark("analysis_end")

    flows.local.LocalServices.__enter__ = timed_enter
    flows.analyze.run_analysis = timed_analysis
    flows.local.LocalServices.__exit__ = timed_exit
    flows.benchmark.run_benchmark = timed_run
    code = entry(["run", "--config", config, "--out", str(out), "--no-progress"])
    mark("main_end")
    return code


def quick_config(folder: Path) -> Path:
    from flows.spec import load_benchmark

    spec = load_benchmark(None)
    references = {**spec.to_dict()["references"], "filter": {"ids": [QUICK_REFERENCE]},
                  "catalog": str(spec.path(spec.references.catalog))}
    spec = spec.with_overrides(name="orchestration-quick", references=references, models=["tiny-sd"],
                               perturbations=["original"], images_per_prompt=1)
    path = folder / "quick.yaml"
    path.write_text(spec.to_yaml())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 reference x tiny-sd x 1 prompt x 1 image")
    parser.add_argument("--config", default=None, help="benchmark file (default: default; --quick: a tiny one)")
    parser.add_argument("--out", type=Path, help="output folder (default: a fresh temporary one, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary output folder")
    parser.add_argument("--cold-validation", action="store_true",
                        help="an empty cache folder for the child ($ICONICITY_CACHE): the validation is computed")
    parser.add_argument("--child", nargs=3, metavar=("OUT", "CONFIG", "TIMINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        out, config, timings = args.child
        return child(Path(out), config, Path(timings))

    scratch = tempfile.TemporaryDirectory(prefix="iconicity-orchestration-")
    root = Path(scratch.name)
    try:
        config = args.config or (str(quick_config(root)) if args.quick else "default")
        out = (args.out or root / "out").resolve()
        if out.exists() and any(out.iterdir()):
            parser.error(f"--out {out}: not empty (the run would resume instead of computing)")
        timings = root / "timings.json"
        env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        if args.cold_validation:
            env["ICONICITY_CACHE"] = str(root / "cache")
        print(f"iconicity run --config {config} --out {out}", flush=True)
        load = os.getloadavg()[0]
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.time()
        done = subprocess.run([sys.executable, __file__, "--child", str(out), config, str(timings)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True, check=False)
        ended = time.time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
        print(done.stdout, end="")
        if done.returncode != 0:
            print(f"iconicity run failed with {done.returncode}", file=sys.stderr)
            return 1
        marks = json.loads(timings.read_text())
        summary = json.loads((out / "summary.json").read_text())
        generation, scoring = float(summary["generation_seconds"]), float(summary["scoring_seconds"])
        compute = generation + scoring
        longest = max(generation, scoring)  # the overlapped stages counted once
        wall = ended - started
        cores = usable_cpus()
        startup = marks["flow_start"] - started
        flow = marks["flow_end"] - marks["flow_start"]
        analysis = marks["analysis_end"] - marks["analysis_start"] if "analysis_end" in marks else 0.0
        teardown = ended - marks["flow_end"] - analysis
        images = sum(c.get("generated", 0) for c in summary["cells"])
        validation = out / "validation.json"
        cached = json.loads(validation.read_text()).get("cache", {}).get("hit") if validation.exists() else None
        figures = {
            "overhead_ratio": wall / compute,
            "wall_s": wall,
            "compute_s": compute,
            "cpu_s": cpu,
            # no ordering of this run's CPU finishes sooner than with every core busy from its
            # start to its end: the ratio that would give, and the core-seconds it did not use
            "overhead_ratio_floor": cpu / cores / compute,
            "unused_core_s": max(0.0, wall * cores - cpu),
            "cores": cores,
            # the whole run over its longer stage alone: no compute counted twice where
            # generation and scoring overlap (both still count time they are contended)
            "overhead_ratio_longest": wall / longest,
            "overhead_ratio_no_report": (wall - analysis) / compute,
            "overhead_ratio_no_startup": flow / compute,
            "overhead_ratio_flow_body": float(summary["seconds"]) / compute,
            # the flow over its longer stage alone: generation and scoring overlap, so this is the
            # ratio without counting overlapped compute twice (an upper bound of the flow's overhead)
            "overhead_ratio_no_startup_longest": flow / longest,
            "startup_s": startup,
            "imports_s": marks["services_start"] - started,
            "services_start_s": marks["services_up"] - marks["services_start"],
            # still waiting for Prefect's temporary API once the services are up (its first
            # start in a new PREFECT_HOME migrates a database)
            "prefect_wait_s": marks["flow_start"] - marks["services_up"],
            "flow_s": flow,
            "flow_body_s": float(summary["seconds"]),
            "analysis_s": analysis,
            "teardown_s": teardown,
            "generation_s": generation,
            "scoring_s": scoring,
            "images": images,
            "cells": len(summary["cells"]),
            "failed_cells": len(summary["failed"]),
            "validation_cached": {True: 1, False: 0, None: "none"}[cached],
            "load_before": load,
            "load_after": os.getloadavg()[0],
        }
        print()
        print(f"wall {wall:.1f} s = startup {startup:.1f} s (imports {figures['imports_s']:.1f}, services "
              f"{figures['services_start_s']:.1f}, then Prefect {figures['prefect_wait_s']:.1f}) + "
              f"flow {flow:.1f} s (body {figures['flow_body_s']:.1f}) + "
              f"analysis and report {analysis:.1f} s + teardown {teardown:.1f} s")
        print(f"compute {compute:.1f} s = generation {generation:.1f} s (inside Triton) + scoring {scoring:.1f} s "
              f"(ScoreImages round trips) over {images} images in {len(summary['cells'])} cells; "
              f"{cpu:.1f} s of CPU in all")
        print(f"on {cores} cores that CPU takes at least {cpu / cores:.1f} s, a ratio of "
              f"{figures['overhead_ratio_floor']:.2f}; {figures['unused_core_s']:.1f} core-seconds went unused")
        print(f"wall / compute: {figures['overhead_ratio']:.2f} with startup and teardown (target <= 1.25), "
              f"{figures['overhead_ratio_longest']:.2f} over the longer stage alone, "
              f"{figures['overhead_ratio_no_startup']:.2f} the flow alone, "
              f"{figures['overhead_ratio_no_startup_longest']:.2f} the flow over its longer stage; "
              f"load average {load:.2f} before, {figures['load_after']:.2f} after")
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()))
        return 0
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            scratch.cleanup()


if __name__ == "__main__":
    sys.exit(main())
