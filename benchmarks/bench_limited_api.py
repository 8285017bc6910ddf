"""What the stable ABI costs: version-specific vs limited-API builds, in one process.

Builds the Cython modules twice (plain, and with `Py_LIMITED_API` = 3.11) and the Rust
crate twice (plain pyo3, and with the `abi3` feature), loads all four side by side, and
times the same hot paths with each, alternating round by round so a load spike from the
machine's other users hits both sides alike:

- `resp encode`: `encode_commands` of 1,000 RPUSH with a 100-byte payload (as
  test_bench_resp.py), and of 1,000 mixed commands (int, float, bytes, str arguments).
- `stage`: publish_batch's staging loop over 10,000 messages.
- `ring emit+drain`, `wheel insert+advance`: the Rust structures (plain vs abi3).

Run: `.venv/bin/python benchmarks/bench_limited_api.py [--rounds N]` (after `make dev`);
it prints one table of medians and ratios (limited/plain time: > 1 means the stable ABI
is slower). Builds go to build/bench-limited-api/ and are reused while the sources match.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench-limited-api"
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "support")]

import test_bench_local_bus as bus_bench  # noqa: E402
from meetq import Message  # noqa: E402

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
        ROOT / "rust" / "src", ROOT / "rust" / "Cargo.toml", ROOT / "rust" / "Cargo.lock"
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


def load(path: Path, name: str, tag: str) -> ModuleType:
    """Loads the extension `name` from `path` as a module of its own (not meetq's)."""
    (so,) = path.glob(f"{name}*.so")
    loader = importlib.machinery.ExtensionFileLoader(f"bench_{tag}.{name}", str(so))
    spec = importlib.util.spec_from_file_location(f"bench_{tag}.{name}", so, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


ENCODE_RPUSH = [("RPUSH", "bench:q", b"x" * 100)] * 1_000
ENCODE_MIXED = [("HSET", "meetq:{q}:m", "id", 123456789, "at", 1733059200.125, b"x" * 60)] * 1_000


def resp_case(resp: ModuleType, batch: list[tuple[Any, ...]]) -> Callable[[], None]:
    encode = resp.encode_commands

    def run() -> None:
        for _ in range(20):
            encode(batch)

    return run


def stage_case(stage: ModuleType) -> Callable[[], None]:
    msgs = [Message(type="noop", payload={"pad": "x" * 80}) for _ in range(10_000)]

    def run() -> None:
        for m in msgs:
            m.id = ""
        chunks: list[list[Any]] = [[] for _ in range(9)]
        ids: list[str] = []
        left = stage.stage(
            iter(msgs),
            ids,
            chunks,
            time.time(),
            orjson.dumps,
            1 << 20,
            "p",
            itertools.count(),
            1 << 30,
        )
        assert left == -1 and len(ids) == len(msgs)

    return run


def ring_case(rs: ModuleType) -> Callable[[], None]:
    return bus_bench.drain_path(rs.RingBuffer)


def wheel_case(rs: ModuleType) -> Callable[[], None]:
    def run() -> None:
        wheel = rs.TimerWheel(0)
        items = [object()] * 1000
        for t in range(0, 50_000, 1000):
            for i, item in enumerate(items):
                wheel.insert(t + i % 300 + 1, item)
            wheel.advance(t + 1000)

    return run


def cases(
    plain: dict[str, ModuleType], limited: dict[str, ModuleType]
) -> list[tuple[str, Any, Any]]:
    out = []
    for label, make in [
        ("resp encode 1,000 RPUSH (x20)", lambda m: resp_case(m["resp"], ENCODE_RPUSH)),
        ("resp encode 1,000 mixed (x20)", lambda m: resp_case(m["resp"], ENCODE_MIXED)),
        ("stage 10,000 messages", lambda m: stage_case(m["stage"])),
        ("ring emit+drain (Rust)", lambda m: ring_case(m["rs"])),
        ("wheel insert+advance 50k (Rust)", lambda m: wheel_case(m["rs"])),
    ]:
        out.append((label, make(plain), make(limited)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; building (reused when unchanged) ...", flush=True)
    variants: dict[str, dict[str, ModuleType]] = {}
    for tag, limited in (("plain", False), ("limited", True)):
        cy = build_cython(limited)
        rs = build_rust(limited)
        mods = {n: load(cy, f"_cy_{n}", tag) for n in CYTHON}
        mods["rs"] = load(rs, "_meetq_rs", tag)
        variants[tag] = mods
    assert variants["plain"]["resp"].encode_commands(ENCODE_MIXED) == variants["limited"][
        "resp"
    ].encode_commands(ENCODE_MIXED)
    print(f"{'path':36} {'plain ms':>9} {'limited ms':>11} {'limited/plain':>14}")
    for label, plain_fn, limited_fn in cases(variants["plain"], variants["limited"]):
        times: dict[str, list[float]] = {"plain": [], "limited": []}
        plain_fn()
        limited_fn()
        for r in range(args.rounds):
            order = [("plain", plain_fn), ("limited", limited_fn)]
            for tag, fn in order if r % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                fn()
                times[tag].append(time.perf_counter() - t0)
        p = statistics.median(times["plain"]) * 1e3
        lim = statistics.median(times["limited"]) * 1e3
        print(f"{label:36} {p:9.2f} {lim:11.2f} {lim / p:14.2f}", flush=True)


if __name__ == "__main__":
    main()
