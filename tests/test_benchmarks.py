"""The benchmark scripts still run and print their figures (no timing is judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
