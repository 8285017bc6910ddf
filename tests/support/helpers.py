"""Test helpers: a real redis-server process, script subprocesses that say when they are
ready, deadline-based waits (never bare sleeps), and the native/pure twins of a core as
test parameters."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def twins(name: str, pure: ModuleType) -> list[Any]:
    """The native extension `name` and its pure twin as parameters; the native one is
    skipped, not failed, when the run uses the pure backend."""
    from meetq import _native

    native = (_native.native_modules or {}).get(name)
    skip = pytest.mark.skipif(native is None, reason="pure run")
    return [pytest.param(native, id="native", marks=skip), pytest.param(pure, id="pure")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _described(cond: Callable[[], Any]) -> str:
    """The condition's source line (which of a test's waits failed), else its repr."""
    try:
        line = inspect.getsourcelines(cond)[0][0].strip()
        return f"{line} ({inspect.getsourcefile(cond)}:{cond.__code__.co_firstlineno})"
    except (OSError, TypeError, AttributeError):
        return repr(cond)


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.002) -> Any:
    """Polls `cond` until it returns a truthy value; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {_described(cond)}")
        time.sleep(interval)


async def async_wait_until(
    cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.002
) -> Any:
    """`wait_until` for async tests: yields to the loop between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {_described(cond)}")
        await asyncio.sleep(interval)


def never(cond: Callable[[], Any], seconds: float, interval: float = 0.002) -> None:
    """Polls `cond` over the whole `seconds` window and fails at the first moment it holds,
    saying when: a negative assertion ("nothing happened") that watches the whole window
    instead of sleeping through it and looking once at the end."""
    start = time.monotonic()
    deadline = start + seconds
    while True:
        value = cond()
        if value:
            raise AssertionError(
                f"condition became true {time.monotonic() - start:.3f}s into a {seconds}s "
                f"window that had to stay false: {cond} -> {value!r}"
            )
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


async def async_never(cond: Callable[[], Any], seconds: float, interval: float = 0.002) -> None:
    """`never` for async tests: yields to the loop between polls (so the code under test
    runs during the window); `cond` may return an awaitable."""
    start = time.monotonic()
    deadline = start + seconds
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            raise AssertionError(
                f"condition became true {time.monotonic() - start:.3f}s into a {seconds}s "
                f"window that had to stay false: {cond} -> {value!r}"
            )
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(interval)


async def next_turns(n: int = 1) -> None:
    """Suspends for `n` loop turns, on no timer: for a handler that must be suspended (so
    what runs beside it gets the loop) where a sleep's duration would stand for nothing."""
    loop = asyncio.get_running_loop()
    for _ in range(n):
        turn = loop.create_future()
        loop.call_soon(turn.set_result, None)
        await turn


async def outlive_first_lease(r: Any, name: str, mid: str) -> None:
    """Returns once the lease of `mid` has been renewed past its first grant: Redis time is
    beyond the deadline it had when first read, the deadline has moved later, and the token
    is the same (it never lapsed and went to another run). A handler that waits for this,
    instead of sleeping "longer than the lease", proves the renewer got through, however
    slow the machine. `r`: a redis-py asyncio client of the queue's server."""
    from meetq._redis.keys import QueueKeys

    keys = QueueKeys(name)
    inflight, meta = keys.named("inflight"), f"{mid}\0l"

    async def lease() -> tuple[float | None, float, bytes]:
        pipe = r.pipeline(transaction=True)
        pipe.zscore(inflight, mid)
        pipe.hget(keys.named("msg"), meta)
        pipe.time()
        score, state, (sec, usec) = await pipe.execute()
        assert state is not None, "not leased"
        return score, sec * 1000 + usec / 1000, state.split(b":")[0]

    first, _, token = await lease()
    assert first is not None, "not leased"

    async def renewed_past_first() -> bool:
        score, now, held_by = await lease()
        assert held_by == token, f"lease lapsed and was taken again ({token!r} -> {held_by!r})"
        return score is not None and score > first and now > first

    await async_wait_until(renewed_past_first, timeout=10, interval=0.01)


@dataclass
class RedisServer:
    """A private redis-server on a random loopback port, with its own directory."""

    port: int
    dir: Path
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    _started: bool = False  # once started, a restart keeps the port its clients know

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            *self.extra,
        ]
        # its log goes to stdout: into its directory, so a failed start says why
        log = self.dir / "redis.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # up (maybe locked)
                        self._started = True
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                said = log.read_bytes()
                if b"Address already in use" in said and not self._started:
                    # free_port() only found the port free a moment ago and another process
                    # took it; nobody knows this server's port before its first start
                    self.port = free_port()
                    self.start()
                    return
                raise RuntimeError(f"redis-server exited: {said[-2000:]!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running_redis(*extra: str) -> Iterator[RedisServer]:
    """A private redis-server for the block (extra args: e.g. persistence), always stopped."""
    with tempfile.TemporaryDirectory(prefix="meetq-redis-") as d:
        server = RedisServer(port=free_port(), dir=Path(d), extra=extra)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def spawn_script(script: Path, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """`python script args...` with this interpreter and import path; stdout is a pipe
    (the script prints "ready ..." on it once it serves: `await_ready`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, env=env, **popen
    )


def await_ready(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> list[str]:
    """Waits (bounded: a script that hangs before "ready" must not block the test) for the
    script's first line, asserts it is "ready ...", and returns the words after "ready"."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    assert readable, f"{proc.args!r} did not start within {timeout} s"
    words = proc.stdout.readline().decode().split()
    assert words[:1] == ["ready"], (proc.args, words)
    return words[1:]


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Stops `proc` at the end of the block, even on failure: SIGTERM (after SIGCONT, in
    case a test stopped it), SIGKILL if it has not exited within 15 s, always waited for."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def script_process(script: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A script subprocess for the block, once it is ready; always stopped (`reaped`)."""
    with reaped(spawn_script(script, *args)) as proc:
        await_ready(proc)
        yield proc


def tcp_addrs(pid: int) -> set[str]:
    """The local "ip:port" of every TCP socket of process `pid`, as CLIENT LIST's addr."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    addrs = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ip_hex, port_hex = fields[1].split(":")
            ip = ".".join(str(int(ip_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
            addrs.add(f"{ip}:{int(port_hex, 16)}")
    assert addrs, f"process {pid} has no TCP sockets"
    return addrs


async def until_disconnected(r: Any, addrs: set[str], timeout: float = 30.0) -> None:
    """Returns once the Redis server of client `r` has dropped every client at `addrs`
    (`tcp_addrs` of a process, taken before killing it). Redis still executes what a
    killed process wrote last (it drains a closed socket before dropping the client), so
    a test that reads what the dead process left must wait for this first."""

    async def gone() -> bool:
        return not addrs & {c["addr"] for c in await r.client_list()}

    await async_wait_until(gone, timeout=timeout)


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Any]:
    """A redis-py asyncio client for inspecting Redis from a test, closed on exit."""
    import redis.asyncio

    r = redis.asyncio.Redis.from_url(url)
    try:
        yield r
    finally:
        await r.aclose()


def reply_objects(raw: bytes) -> list[Any]:
    """The reply objects in one element of a reply list: a worker's batched ack writes one
    element per call, the JSON array of its members' replies; other outcomes one object."""
    import orjson

    got = orjson.loads(raw)
    return got if isinstance(got, list) else [got]


def native_module(name: str) -> Any:
    """The compiled extension `meetq.<name>`, or None when this build has none."""
    import importlib

    try:
        return importlib.import_module(f"meetq.{name}")
    except ImportError:
        return None
