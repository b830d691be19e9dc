"""Facts about the container a model runs in."""

from __future__ import annotations

import math
import os
from pathlib import Path

ENV_THREADS = "CORTEXBOX_NUM_THREADS"


def cpu_quota() -> int:
    """CPUs this process may use: $CORTEXBOX_NUM_THREADS or $OMP_NUM_THREADS if set, else the cgroup
    CPU quota (v2 cpu.max or v1 cfs_quota_us / cfs_period_us, rounded down, at least 1), capped by
    the CPU affinity mask.

    Container runtimes enforce ``--cpus`` through that quota, which neither os.cpu_count() nor
    thread pools see; using more threads than the quota only causes throttling.
    """
    for name in (ENV_THREADS, "OMP_NUM_THREADS"):  # an explicit setting wins
        if os.environ.get(name, "").strip().isdigit():
            return max(1, int(os.environ[name]))
    cpus = len(os.sched_getaffinity(0))
    quota = None
    try:
        limit, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if limit != "max":
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        for folder in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
            try:
                quota_us = int(Path(folder, "cpu.cfs_quota_us").read_text())
                period_us = int(Path(folder, "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota_us > 0 and period_us > 0:
                quota = quota_us / period_us
            break
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)
