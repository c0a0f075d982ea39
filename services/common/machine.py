"""What this process may use of the machine it runs on."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cgroup_cpu_max: str | os.PathLike[str] = CGROUP_CPU_MAX) -> int:
    """The CPUs this process can run on at once: those of its affinity mask, fewer where its
    cgroup's quota allows less (a Kubernetes CPU limit shows every core of the node to
    `os.cpu_count()`).

    >>> usable_cpus() >= 1
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path(cgroup_cpu_max).read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 here, or a format this does not know
        pass
    return max(1, cpus)


__all__ = ["usable_cpus"]
