"""`meetq bench`: runs the pytest-benchmark suites and prints the ratio tables.

The benchmarks live beside the package in a source checkout (`benchmarks/`), not in the
wheel; the command finds them from the current directory (or `--path`) and runs
`pytest benchmarks --benchmark-only --benchmark-json=...` then `benchmarks/report.py`, the
same pair `make bench` runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from meetq.ops.common import EXIT_FAILURE, EXIT_MISSING, CliError


def find_benchmarks(path: str | None) -> Path:
    candidates = [Path(path)] if path else [Path.cwd() / "benchmarks"]
    if not path:
        # an editable install: python/meetq/ops/bench.py -> the checkout's benchmarks/
        candidates.append(Path(__file__).resolve().parents[3] / "benchmarks")
    for c in candidates:
        if (c / "report.py").is_file():
            return c
    raise CliError(
        "benchmarks/ not found: run from a meetq source checkout or give --path", EXIT_MISSING
    )


def run_bench(path: str | None, scale: float | None, select: str | None, extra: list[str]) -> int:
    bench_dir = find_benchmarks(path)
    env = dict(os.environ)
    if scale is not None:
        env["MEETQ_BENCH_SCALE"] = str(scale)
    with tempfile.TemporaryDirectory(prefix="meetq-bench-") as d:
        out = Path(d) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            str(bench_dir),
            "--benchmark-only",
            f"--benchmark-json={out}",
            "-p",
            "no:cacheprovider",
        ]
        if select:
            cmd += ["-k", select]
        cmd += extra
        print("running: " + " ".join(cmd), file=sys.stderr, flush=True)
        run = subprocess.run(cmd, cwd=bench_dir.parent, env=env, check=False)
        if run.returncode != 0 or not out.exists():
            raise CliError(f"benchmarks failed (pytest exit {run.returncode})", EXIT_FAILURE)
        report = subprocess.run(
            [sys.executable, str(bench_dir / "report.py"), str(out)],
            cwd=bench_dir.parent,
            env=env,
            check=False,
        )
        if report.returncode != 0:
            raise CliError("benchmarks/report.py failed", EXIT_FAILURE)
    return 0
