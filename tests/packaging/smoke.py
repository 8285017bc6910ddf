"""Smoke of an installed meetq, run by tests/packaging inside a fresh virtualenv.

Usage: `python smoke.py native|pure`. Checks that meetq comes from this venv's
site-packages with the expected backend and no build tool in reach, that every module of
the package imports (a module whose optional extra is not installed is listed, not
failed), that the native RESP encoder and its pure twin agree, that the bus and the
scheduler run sync, async and awaitable handlers and cancel a delayed task, and runs
`meetq demo` on a tiny scale: the bus from four threads, the scheduler, and the Redis queue
(retries, DLQ) against a private redis-server. Prints one line per check; exits non-zero
on a failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import shutil
import subprocess
import sys


def check_install(expected: str) -> None:
    import meetq

    assert meetq.backend() == expected, f"backend {meetq.backend()}, expected {expected}"
    where = os.path.realpath(meetq.__file__)
    assert where.startswith(os.path.realpath(sys.prefix)), f"meetq imported from {where}"
    assert "site-packages" in where, where
    for tool in ("cc", "gcc", "c++", "cargo", "rustc"):
        assert shutil.which(tool) is None, f"{tool} is on PATH: {shutil.which(tool)}"
    for module in ("Cython", "setuptools_rust"):
        assert importlib.util.find_spec(module) is None, f"{module} is installed"
    compiled = [n for n in os.listdir(os.path.dirname(where)) if n.endswith(".so")]
    if expected == "pure":
        assert not compiled, f"a pure install holds {compiled}"
    else:
        # Every compiled module ships with its stub; the two sets must name the same modules.
        stubs = {
            n[: -len(".pyi")] for n in os.listdir(os.path.dirname(where)) if n.endswith(".pyi")
        }
        assert {n.split(".")[0] for n in compiled} == stubs, (compiled, stubs)
    print(f"ok install: meetq {meetq.__version__} backend={expected} {sorted(compiled)}")


def check_modules() -> None:
    import meetq

    skipped = []
    count = 0
    for info in pkgutil.walk_packages(meetq.__path__, "meetq."):
        if info.name.endswith(".__main__"):
            continue  # runs the CLI; check_demo does
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "meetq":
                raise
            skipped.append(f"{info.name} (needs {exc.name})")
            continue
        count += 1
    for name in meetq._LAZY:
        try:
            getattr(meetq, name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "meetq":
                raise
    from meetq._redis import scripts  # noqa: F401  (loads the Lua files: package data)

    print(f"ok modules: {count} imported; without their extras: {', '.join(skipped) or 'none'}")


def check_resp() -> None:
    from meetq import _native
    from meetq._pure import resp as pure

    batch = [("HSET", "k", "f", 123, "g", 1.5, b"\x00bytes", bytearray(b"ba"))] * 3
    assert _native.encode_commands(batch) == pure.encode_commands(batch)
    print("ok resp: the active encoder and the pure twin agree")


def check_local() -> None:
    """The bus and the scheduler on the installed core: the paths where the abi3 build
    swaps CPython calls for their stable twins (awaitable detection, Task construction)."""
    import asyncio

    from meetq import LocalEventBus, Task, TaskScheduler, TaskStatus

    class Awaitable:
        def __await__(self):  # type: ignore[no-untyped-def]
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    async def coro(task: Task) -> str:
        await asyncio.sleep(0)
        return "async"

    async def main() -> None:
        seen: list[object] = []
        handled = asyncio.Event()

        def on_e(ev):  # type: ignore[no-untyped-def]
            seen.append(ev.payload)
            handled.set()

        bus = LocalEventBus()
        bus.on("e", on_e)
        await bus.start()
        bus.emit("e", {"n": 1}, "smoke")
        await asyncio.wait_for(handled.wait(), 10)
        await bus.stop()
        assert seen == [{"n": 1}], seen
        s = TaskScheduler()
        await s.start()
        tasks = [
            Task(type="sync", handler=lambda t: "sync"),
            Task(type="async", handler=coro),
            Task(type="obj", handler=lambda t: Awaitable()),
        ]
        ids = [s.submit(t) for t in tasks]
        late = s.submit(Task("late", lambda t: "never", delay=60))
        assert s.cancel(late) and s.status(late) == TaskStatus.CANCELLED
        for tid in ids:
            result = await asyncio.wait_for(s.wait(tid), 30)
            assert result.status == TaskStatus.COMPLETED, result
        got = [t.result for t in tasks]
        assert got == ["sync", "async", "awaited"], got
        await s.stop()

    asyncio.run(main())
    print("ok local: bus and scheduler ran sync, async and awaitable handlers")


def check_demo() -> None:
    meetq_cli = os.path.join(os.path.dirname(sys.executable), "meetq")
    out = subprocess.run([meetq_cli, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"meetq --help failed:\n{out.stdout}\n{out.stderr}"
    if importlib.util.find_spec("rich") is None:
        print("ok demo: skipped, the demo extra (rich) is not installed here")
        return
    cmd = [meetq_cli, "demo", "--duration", "2", "--rate", "20", "--clients", "2"]
    cmd += ["--meetings", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"meetq demo failed:\n{out.stdout}\n{out.stderr}"
    print(f"ok demo: {len(out.stdout.splitlines())} lines of summary")


if __name__ == "__main__":
    check_install(sys.argv[1])
    check_modules()
    check_resp()
    check_local()
    check_demo()
