"""The AI benchmark scripts, run once on tiny workloads so they cannot rot (in
`make bench-smoke`); only that they finish and print their tables is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytest.importorskip("zmq")


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        (
            "bench_ai.py",
            ["--only", "a", "--n", "50", "--burst", "200", "--window", "50"],
            ["raw pyzmq floor", "meetq client+node", "ratio p50 ours/raw"],
        ),
        ("bench_ai.py", ["--only", "c", "--model-n", "1"], ["asr (PocketSphinx", "sentiment"]),
        (
            "bench_ai_path.py",
            ["--rates", "50", "--seconds", "0.3", "--conns", "2", "--workers", "16"],
            ["| offered/s |", "hop cells", "CPU cells"],
        ),
        (
            "bench_ai_worker.py",
            ["--rates", "50", "--seconds", "0.3", "--workers", "16"],
            ["| offered/s |", "CPU cells"],
        ),
    ],
)
def test_script_runs(script: str, args: list[str], expect: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for line in expect:
        assert line in done.stdout, done.stdout[-2000:]
