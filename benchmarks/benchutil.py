"""Shared helpers of the benchmarks (kept out of the package)."""

from __future__ import annotations

import os
import time
from typing import Any


def scale(name: str, default: int) -> int:
    """Event counts can be shrunk for a CI smoke run (MEETQ_BENCH_SCALE=0.05)."""
    return max(1, int(default * float(os.environ.get("MEETQ_BENCH_SCALE", "1"))))


def record_rate(benchmark: Any, unit: str, count: int) -> None:
    """Stores `<unit>_per_s` for report.py; a no-op under --benchmark-disable (smoke runs)."""
    if benchmark.stats is not None:
        benchmark.extra_info[f"{unit}_per_s"] = count / benchmark.stats.stats.median


def cpu_slowdowns(
    seconds: float = 3.0, window: float = 100e-6, gap: float = 0.001
) -> dict[str, Any]:
    """How often this machine's CPU runs far below its usual speed.

    Spins in `window`-long slices `gap` apart (about a tenth of one core) and counts the
    slices that got less than a quarter of the median work done. On the shared VMs we
    measure on, such slowdowns come in episodes of tens of milliseconds; inside one, every
    process runs several times slower, and latency tails measure the episodes as much as
    the code. Run it between measurements, not during them.
    """
    clock = time.perf_counter
    done: list[tuple[float, int]] = []
    t0 = clock()
    end = t0 + seconds
    while clock() < end:
        start = clock()
        n = 0
        while clock() - start < window:
            n += 1
        done.append((start - t0, n))
        time.sleep(gap)
    median = sorted(n for _, n in done)[len(done) // 2]
    slow = [t for t, n in done if n * 4 < median]
    episodes = sum(1 for i, t in enumerate(slow) if i == 0 or t - slow[i - 1] > 0.05)
    return {
        "seconds": seconds,
        "slow_fraction": len(slow) / len(done),
        "episodes": episodes,
    }
