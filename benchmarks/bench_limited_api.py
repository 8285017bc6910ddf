"""What the stable ABI costs: version-specific vs limited-API builds, side by side.

Builds the Cython modules twice (plain, and with `Py_LIMITED_API` = 3.11) and the Rust
crate twice (plain pyo3, and with the `abi3` feature: capi.rs's stable twins, no `Task`
vectorcall constructor), then starts two worker processes of this interpreter: `plain`
imports meetq with the plain builds, `limited` with the limited ones (what the single
`cp311-abi3` wheel of `MEETQ_LIMITED_API=1` holds). Each case runs in both, alternating
which goes first round by round, so a load spike from the machine's other users hits both
sides alike. Cases, all through meetq's own modules:

- Cython: `resp encode` (`encode_commands` of 1,000 RPUSH with a 100-byte payload as in
  test_bench_resp.py, and of 1,000 mixed int/float/bytes/str commands), `stage`
  (publish_batch's staging loop over 10,000 messages).
- Rust structures: ring emit+drain (test_bench_local_bus's batch path), wheel
  insert+advance.
- Rust scheduler core, through `TaskScheduler`: `Task(...)` construction with keywords,
  delayed submit + cancel (bench_local_api's workload), and immediate no-op tasks with a
  sync and with an async handler (bench_scheduler's workload); and the bus's emit ->
  sync handler path (`LocalEventBus`, bench_local_api's single emits).

Run: `.venv/bin/python benchmarks/bench_limited_api.py [--rounds N] [--json OUT]` (after
`make dev`); MEETQ_BENCH_SCALE scales the workloads. It prints the load average before and
after, and one table of medians of the child's CPU time per round (its wall time is in the
JSON) with the ratio limited/plain: > 1 means the stable ABI is slower. Builds go to
build/bench-limited-api/ and are reused while the sources match.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench-limited-api"
CYTHON = ("resp", "stage")


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_cython(limited: bool) -> Path:
    """Compiles native/*.pyx into OUT/cy-<variant>/ (reused while the sources match)."""
    dest = (
        OUT / f"cy-{'limited' if limited else 'plain'}-py{sys.version_info[0]}{sys.version_info[1]}"
    )
    stamp = dest / ".digest"
    digest = _digest(ROOT / "native", ROOT / "setup.py")
    if stamp.exists() and stamp.read_text() == digest:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    src = dest / "src"
    src.mkdir(parents=True)
    for name in CYTHON:
        shutil.copy(ROOT / "native" / f"{name}.pyx", src / f"_cy_{name}.pyx")
    macros = '[("Py_LIMITED_API", "0x030B0000")]' if limited else "[]"
    script = (
        "from Cython.Build import cythonize\n"
        "from setuptools import Extension, setup\n"
        f"exts = [Extension(n, [n + '.pyx'], extra_compile_args=['-O3'], define_macros={macros},"
        f" py_limited_api={limited}) for n in {[f'_cy_{n}' for n in CYTHON]!r}]\n"
        "setup(name='b', ext_modules=cythonize(exts, language_level=3, compiler_directives="
        "{'boundscheck': False, 'wraparound': False}), script_args=['build_ext', '--inplace'])\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=src, check=True, capture_output=True)
    for so in src.glob("_cy_*.so"):
        shutil.move(str(so), dest / so.name)
    stamp.write_text(digest)
    return dest


def build_rust(abi3: bool) -> Path:
    """cargo-builds the crate into OUT/rs-<variant>/ (reused while the sources match)."""
    dest = OUT / f"rs-{'abi3' if abi3 else 'plain'}-py{sys.version_info[0]}{sys.version_info[1]}"
    stamp = dest / ".digest"
    digest = _digest(
        ROOT / "rust" / "src",
        ROOT / "rust" / "build.rs",
        ROOT / "rust" / "Cargo.toml",
        ROOT / "rust" / "Cargo.lock",
    )
    if stamp.exists() and stamp.read_text() == digest:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    features = "extension-module,abi3" if abi3 else "extension-module"
    env = {**os.environ, "PYO3_PYTHON": sys.executable, "CARGO_TARGET_DIR": str(dest / "target")}
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--features", features],
        cwd=ROOT / "rust",
        env=env,
        check=True,
        capture_output=True,
    )
    shutil.copy(dest / "target" / "release" / "lib_meetq_rs.so", dest / "_meetq_rs.so")
    shutil.rmtree(dest / "target")
    stamp.write_text(digest)
    return dest


class VariantFinder(importlib.abc.MetaPathFinder):
    """Finds meetq's compiled modules in the variant's build directories instead of the
    package's own: installed first on sys.meta_path, before anything imports meetq (the
    Cython modules import meetq while they load, so placing modules in sys.modules one at
    a time would let meetq bind the others from the package)."""

    def __init__(self, cy: Path, rs: Path) -> None:
        self.files = {}
        for path, name in [(cy, "_cy_resp"), (cy, "_cy_stage"), (rs, "_meetq_rs")]:
            (so,) = path.glob(f"{name}*.so")
            self.files[f"meetq.{name}"] = so

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        so = self.files.get(fullname)
        if so is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(so))
        return importlib.util.spec_from_file_location(fullname, so, loader=loader)


def worker_cases() -> dict[str, Callable[[], None]]:
    """The cases, bound to the meetq this worker imported (names as in the table)."""
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "support")]
    import orjson

    import bench_local_api as api
    import bench_scheduler as sched
    import test_bench_local_bus as bus_bench
    from benchutil import scale
    from meetq import Message, Task, _native

    rpush = [("RPUSH", "bench:q", b"x" * 100)] * 1_000
    mixed = [("HSET", "meetq:{q}:m", "id", 123456789, "at", 1733059200.125, b"x" * 60)] * 1_000
    msgs = [Message(type="noop", payload={"pad": "x" * 80}) for _ in range(10_000)]
    n_tasks = max(1000, scale("limited_tasks", 20_000) // 1000 * 1000)

    def encode(batch: list[tuple[Any, ...]]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(20):
                _native.encode_commands(batch)

        return run

    def stage() -> None:
        for m in msgs:
            m.id = ""
        chunks: list[list[Any]] = [[] for _ in range(9)]
        ids: list[str] = []
        left = _native.stage(
            iter(msgs), ids, chunks, time.time(), orjson.dumps, 1 << 20, "p",
            itertools.count(), 1 << 30,
        )  # fmt: skip
        assert left == -1 and len(ids) == len(msgs)

    def wheel() -> None:
        w = _native.TimerWheel(0)
        items = [object()] * 1000
        for t in range(0, 50_000, 1000):
            for i, item in enumerate(items):
                w.insert(t + i % 300 + 1, item)
            w.advance(t + 1000)

    def task_new() -> None:
        for _ in range(n_tasks):
            Task(type="t", handler=sched.sync_noop, delay=1.5, max_retries=2)

    return {
        "resp encode 1,000 RPUSH (x20)": encode(rpush),
        "resp encode 1,000 mixed (x20)": encode(mixed),
        "stage 10,000 messages": stage,
        "ring emit+drain (Rust)": bus_bench.drain_path(_native.RingBuffer),
        "wheel insert+advance 50k (Rust)": wheel,
        f"Task(...) x{n_tasks:,} (Rust)": task_new,
        f"sched delayed submit+cancel x{n_tasks:,}": lambda: api.sched_submit_cancel(n_tasks),
        f"sched sync no-op tasks x{n_tasks:,}": lambda: sched.scheduler_tasks(n_tasks),
        f"sched async no-op tasks x{n_tasks:,}": (
            lambda: sched.scheduler_tasks(n_tasks, sched.async_noop)
        ),
        f"bus emit -> sync handler x{n_tasks:,}": lambda: api.bus_single_emits(n_tasks),
    }


def worker(cy: Path, rs: Path) -> None:
    """A worker process: announces its modules and cases, then times each case it is sent
    on stdin (one name a line) and answers with its CPU and wall seconds."""
    sys.meta_path.insert(0, VariantFinder(cy, rs))
    import meetq
    from meetq import _native

    assert meetq.backend() == "native"
    assert _native.native_modules is not None
    files = {k: str(m.__file__) for k, m in _native.native_modules.items()}
    assert all(f.startswith(str(OUT)) for f in files.values()), files
    cases = worker_cases()
    print(json.dumps({"files": files, "cases": list(cases)}), flush=True)
    for line in sys.stdin:
        fn = cases[line.rstrip("\n")]
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        out = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
        print(json.dumps(out), flush=True)


class Worker:
    def __init__(self, tag: str, cy: Path, rs: Path) -> None:
        self.tag = tag
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(cy), str(rs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "MEETQ_BACKEND": "native"},
        )
        self.hello = json.loads(self.read())

    def read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.tag} worker exited ({self.proc.wait()})")
        return line

    def time(self, case: str) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(case + "\n")
        self.proc.stdin.flush()
        out: dict[str, float] = json.loads(self.read())
        return out

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: say how busy it was)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write every round's times here")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    print(f"python {sys.version.split()[0]}; building (reused when unchanged) ...", flush=True)
    builds = {tag: (build_cython(lim), build_rust(lim)) for tag, lim in VARIANTS.items()}
    print(f"load average before: {load_average()}", flush=True)
    workers = {tag: Worker(tag, *dirs) for tag, dirs in builds.items()}
    results: dict[str, Any] = {"python": sys.version.split()[0], "load_before": load_average()}
    try:
        for tag, w in workers.items():
            print(f"{tag}: " + ", ".join(Path(f).name for f in w.hello["files"].values()))
        print(f"{'path':40} {'plain ms':>9} {'limited ms':>11} {'limited/plain':>14}")
        for case in workers["plain"].hello["cases"]:
            times: dict[str, list[dict[str, float]]] = {tag: [] for tag in workers}
            for w in workers.values():
                w.time(case)  # warm-up
            for r in range(args.rounds):
                order = list(workers.values())
                for w in order if r % 2 == 0 else order[::-1]:
                    times[w.tag].append(w.time(case))
            med = {t: statistics.median(x["cpu"] for x in v) * 1e3 for t, v in times.items()}
            ratio = med["limited"] / med["plain"]
            print(f"{case:40} {med['plain']:9.2f} {med['limited']:11.2f} {ratio:14.2f}", flush=True)
            results[case] = {"median_cpu_ms": med, "ratio": ratio, "rounds": times}
    finally:
        for w in workers.values():
            w.close()
    results["load_after"] = load_average()
    print(f"load average after: {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


VARIANTS = {"plain": False, "limited": True}

if __name__ == "__main__":
    main()
