"""`services.common.machine.usable_cpus`: the affinity mask, capped by a cgroup CPU quota."""

from __future__ import annotations

import os

import pytest

from services.common.machine import usable_cpus

AFFINITY = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000\n", AFFINITY),                # no quota
    ("50000 100000\n", 1),                     # half a CPU still runs one thread
    ("150000 100000\n", min(AFFINITY, 2)),     # 1.5 CPUs: two threads, never more than the mask
    ("100000000 100000\n", AFFINITY),          # a quota above the mask
    ("garbage\n", AFFINITY),                   # a format this does not know
])
def test_a_cgroup_quota_caps_the_affinity_mask(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert usable_cpus(path) == expected


def test_without_a_cgroup_file_the_affinity_mask_counts(tmp_path):
    assert usable_cpus(tmp_path / "missing") == AFFINITY
