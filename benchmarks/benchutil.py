"""Shared helpers of the benchmarks (kept out of the package)."""

from __future__ import annotations

import os


def scale(name: str, default: int) -> int:
    """Event counts can be shrunk for a CI smoke run (MEETQ_BENCH_SCALE=0.05)."""
    return max(1, int(default * float(os.environ.get("MEETQ_BENCH_SCALE", "1"))))
