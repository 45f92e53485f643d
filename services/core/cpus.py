"""How many CPU cores this process may really use: its affinity mask, capped by a cgroup CPU quota.

`os.cpu_count()` reports the host's cores; a container limited to 2 CPUs on a 64-core host would then start
64 intra-op threads that fight over 2 cores. Affinity (taskset, cpusets) and the cgroup quota (Docker
`--cpus`, Kubernetes CPU limits) are what actually bound the process.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def cgroup_cpu_limit(
    cpu_max: Path = CGROUP_V2_CPU_MAX, v1_quota: Path = CGROUP_V1_QUOTA, v1_period: Path = CGROUP_V1_PERIOD
) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, else v1 cfs quota/period); None when unlimited."""
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(v1_quota.read_text(encoding="ascii").strip())
        period_us = int(v1_period.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpu_count() -> int:
    """Cores this process may use: affinity, capped by the cgroup quota rounded up; at least 1."""
    count = _affinity_count()
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


__all__ = ["available_cpu_count", "cgroup_cpu_limit"]
