"""The standalone benchmark scripts, run once on tiny workloads so they cannot rot.

Each runs in its own process (as a user runs it) with its own redis-server; only that it
finishes and prints its result lines is checked, never a number.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
AI = pytest.mark.skipif(importlib.util.find_spec("zmq") is None, reason="needs meetq[ai]")


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("bench_publish.py", ["--n", "500", "--rounds", "1"], ["publish_batch"]),
        (
            "bench_script_calls.py",
            ["--calls", "40", "--repeats", "1"],
            ["whole dequeue", "minimal pickup", "LPOP (plain)"],
        ),
        (
            "latency_breakdown.py",
            ["--rate", "200", "--seconds", "0.5", "--repeats", "1"],
            ["meetq  create->write", "raw    create->write", "pickups over 1 ms"],
        ),
        (
            "stall_probe.py",
            ["--rate", "200", "--seconds", "0.5", "--repeats", "1"],
            ["meetq  pickup p50", "raw    pickup p50"],
        ),
        (
            "bench_queue_self.py",
            ["--jobs", "500", "--repeats", "1"],
            ["drain 500 jobs", "latency at 10,000 jobs/s", "CPU slowdown episodes"],
        ),
        (
            "bench_cluster.py",
            ["--messages", "200", "--rounds", "1"],
            ["3 queues on 3 shards", "scaling 3 shards / 1 shard", "routing cost"],
        ),
        (
            "bench_cluster.py",
            ["--broadcast", "--messages", "600", "--rounds", "1"],
            ["Pub/Sub publish + fan-out", "Streams publish + consume", "cluster / single"],
        ),
        pytest.param(
            "bench_ai.py",
            ["--only", "a", "--n", "50", "--burst", "200", "--window", "50"],
            ["raw pyzmq floor", "meetq client+node", "ratio p50 ours/raw"],
            marks=AI,
        ),
        pytest.param(
            "bench_ai.py",
            ["--only", "c", "--model-n", "1"],
            ["asr (PocketSphinx", "sentiment"],
            marks=AI,
        ),
        pytest.param(
            "bench_ai_path.py",
            ["--rates", "50", "--seconds", "0.3", "--conns", "2", "--workers", "16"],
            ["| offered/s |", "hop cells", "CPU cells"],
            marks=AI,
        ),
        pytest.param(
            "bench_ai_worker.py",
            ["--rates", "50", "--seconds", "0.3", "--workers", "16"],
            ["| offered/s |", "CPU cells"],
            marks=AI,
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
