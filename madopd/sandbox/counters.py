"""The sandbox's event counters (a leaf module: ``cgroup`` counts its sweeps here without
importing the package that imports it).

Every degraded or notable event, counted (never silent): isolation_degraded, degraded/<what>,
truncated_output, timeouts_wall, leftover_processes_killed, stale_cgroups_swept, channel/...
``madopd.sandbox.COUNTERS`` is this same Counter object.
"""

from __future__ import annotations

import threading
from collections import Counter

COUNTERS: Counter[str] = Counter()
_COUNTER_LOCK = threading.Lock()


def count(key: str, n: int = 1) -> None:
    """Add ``n`` to ``COUNTERS[key]`` (thread-safe: runs of ``run_many`` count concurrently)."""
    with _COUNTER_LOCK:
        COUNTERS[key] += n
