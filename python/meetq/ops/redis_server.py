"""A private, throwaway redis-server for `meetq demo` (and anything else that needs one).

It listens only on a unix socket in a fresh temp dir (TCP port 0 = no TCP at all), keeps
nothing on disk, and is stopped with its directory removed on exit, even after Ctrl-C,
so no process or socket file outlives the block.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from meetq.errors import MeetqError
from meetq.ops.common import die_with_parent


class RedisServerError(MeetqError):
    """redis-server would not start."""


class RedisServerMissing(RedisServerError):
    """There is no redis-server binary to start."""


def _answers_ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def private_redis(
    binary: str | None = None, start_timeout: float = 15.0, maxmemory: str = "512mb"
) -> Iterator[str]:
    """Starts redis-server on a unix socket in a temp dir; yields its `unix://` URL."""
    server = binary or shutil.which("redis-server")
    if server is None or not Path(server).exists():
        raise RedisServerMissing(
            "redis-server not found: install it (Debian: apt-get install redis-server) "
            "or point REDIS_URL at a running server"
        )
    with tempfile.TemporaryDirectory(prefix="meetq-redis-") as d:
        sock = Path(d) / "redis.sock"
        proc = subprocess.Popen(
            [
                server,
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--dir",
                d,
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory",
                maxmemory,
                "--loglevel",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C reaches us, and we stop it in order
            preexec_fn=die_with_parent,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while not _answers_ping(sock):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RedisServerError(f"redis-server exited at start: {err.strip()}")
                if time.monotonic() > deadline:
                    raise RedisServerError(f"redis-server did not answer within {start_timeout}s")
                time.sleep(0.01)
            yield f"unix://{sock}"
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
