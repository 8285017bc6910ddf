"""`meetq bench` runs the pytest-benchmark suites and prints report.py's ratio tables."""

from __future__ import annotations

from pathlib import Path

from clirun import meetq, one_line_error

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_bench_prints_the_ratio_table() -> None:
    proc = meetq("bench", "--path", str(BENCHMARKS), "--scale", "0.02", "-k", "encode", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "### encode" in proc.stdout
    assert "times slower than meetq native" in proc.stdout
    assert "encode_pure" in proc.stdout


def test_bench_without_benchmarks_says_where_to_run_it(tmp_path: Path) -> None:
    proc = meetq("bench", "--path", str(tmp_path))
    assert proc.returncode == 4
    assert "benchmarks/ not found" in one_line_error(proc)


def test_failing_benchmarks_exit_1(tmp_path: Path) -> None:
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "report.py").write_text("raise SystemExit('must not run')\n")
    (bench / "test_bench_broken.py").write_text(
        "def test_broken(benchmark):\n    benchmark(lambda: 1 / 0)\n"
    )
    proc = meetq("bench", "--path", str(bench))
    assert proc.returncode == 1
    assert "benchmarks failed (pytest exit 1)" in proc.stderr
