"""The broadcast benchmark scripts (issue 13), run once on tiny workloads so they cannot rot.

Each runs in its own process with its own redis-server; only that it finishes and prints its
result lines is checked, never a number.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        (
            "bench_broadcast.py",
            ["--n", "500", "--rounds", "1", "--seconds", "0.7", "--repeats", "1",
             "--events", "500", "--channels", "500"],
            ["(a) publish_batch", "(b) latency", "(c) streams fan-out", "(d) resubscribe"],
        ),
        (
            "bench_broadcast_soak.py",
            ["--events", "5000", "--reference", "2000", "--window", "2000"],
            ["soak 5,000 events", "used_memory baseline", "stream length"],
        ),
    ],
)  # fmt: skip
def test_script_runs(script: str, args: list[str], expect: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for line in expect:
        assert line in done.stdout, done.stdout[-2000:]
