"""The benchmark scripts still run and print their figures (no timing is judged here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.common.machine import usable_cpus

ROOT = Path(__file__).resolve().parents[1]


def test_scorer_benchmark_quick_run_prints_its_figures():
    result = subprocess.run([sys.executable, "benchmarks/scorer.py", "--quick", "--n-images", "4"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    figures = dict(pair.split("=", 1) for pair in last.split())
    assert list(figures)[:3] == ["static_speedup", "dynamic_speedup", "floor_ratio"]
    for key in ("static_speedup", "dynamic_speedup", "floor_ratio"):
        assert float(figures[key]) > 0
    # Ours and the naive algorithm computed the same scores.
    assert figures.get("check") == "pass"


def _last_line_figures(script: str, *args: str) -> dict[str, str]:
    result = subprocess.run([sys.executable, script, "--quick", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, (result.stdout[-1000:], result.stderr[-2000:])
    last = result.stdout.strip().splitlines()[-1]
    return dict(pair.split("=", 1) for pair in last.split())


def test_generator_benchmark_quick_run_prints_its_figures():
    figures = _last_line_figures("benchmarks/generator.py")
    assert list(figures)[:2] == ["vs_sequential", "vs_batched"]
    assert float(figures["vs_sequential"]) > 0 and float(figures["vs_batched"]) > 0
    # Every way of generating made the same images (within one level; see the script).
    assert figures.get("check") == "pass"



def test_orchestration_benchmark_quick_run_prints_its_figures(tmp_path):
    """`iconicity run` on one reference, one model, one image, timed phase by phase. Its own
    PREFECT_HOME and cache folder: the child starts Prefect's temporary API and validates
    (skipped here: one work) beside whatever else the test session runs."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "ICONICITY_CACHE": str(tmp_path / "cache")}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([sys.executable, "benchmarks/orchestration.py", "--quick"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, (result.stdout[-1000:], result.stderr[-2000:])
    figures = dict(pair.split("=", 1) for pair in result.stdout.strip().splitlines()[-1].split())
    assert list(figures)[:4] == ["overhead_ratio", "wall_s", "compute_s", "cpu_s"]
    assert float(figures["cpu_s"]) > 0
    assert (figures["images"], figures["cells"], figures["failed_cells"]) == ("1", "1", "0")
    wall, compute = float(figures["wall_s"]), float(figures["compute_s"])
    assert compute > 0 and abs(float(figures["overhead_ratio"]) - wall / compute) < 0.01 * wall / compute
    # The floor: the run's CPU spread over every usable core, against the same compute.
    cpu, cores = float(figures["cpu_s"]), int(figures["cores"])
    assert cores == usable_cpus()
    assert abs(float(figures["overhead_ratio_floor"]) - cpu / cores / compute) < 0.01 * cpu / cores / compute
    assert abs(float(figures["unused_core_s"]) - max(0.0, wall * cores - cpu)) < 0.01 * wall * cores
    longest = max(float(figures["generation_s"]), float(figures["scoring_s"]))
    assert abs(float(figures["overhead_ratio_longest"]) - wall / longest) < 0.01 * wall / longest
    # The phases are the whole: startup, flow, analysis and teardown add up to the wall time.
    phases = sum(float(figures[k]) for k in ("startup_s", "flow_s", "analysis_s", "teardown_s"))
    assert abs(phases - wall) < 0.05 * wall, (phases, wall)
    assert figures["validation_cached"] == "none"  # one work: nothing to validate against
