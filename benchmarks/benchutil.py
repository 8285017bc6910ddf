"""Shared helpers of the benchmarks (kept out of the package)."""

from __future__ import annotations

import os
from typing import Any


def scale(name: str, default: int) -> int:
    """Event counts can be shrunk for a CI smoke run (MEETQ_BENCH_SCALE=0.05)."""
    return max(1, int(default * float(os.environ.get("MEETQ_BENCH_SCALE", "1"))))


def record_rate(benchmark: Any, unit: str, count: int) -> None:
    """Stores `<unit>_per_s` for report.py; a no-op under --benchmark-disable (smoke runs)."""
    if benchmark.stats is not None:
        benchmark.extra_info[f"{unit}_per_s"] = count / benchmark.stats.stats.median
