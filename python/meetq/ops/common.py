"""Exit codes and the errors the `meetq` commands end with (one line, no traceback).

| code | meaning |
|---|---|
| 0 | success |
| 1 | the command ran and failed (a benchmark failed, the demo saw an error, a worker died) |
| 2 | usage: bad arguments, a bad Redis URL, bad worker settings |
| 3 | Redis (or another server the command needs) cannot be reached |
| 4 | something required is missing: redis-server, an extra, the worker's module |
| 5 | the user declined a confirmation (`dlq purge` without `--yes`) |
| 130 | interrupted (Ctrl-C) |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from meetq.errors import MeetqError

if TYPE_CHECKING:
    import redis.asyncio

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_MISSING = 4
EXIT_DECLINED = 5
EXIT_INTERRUPTED = 130

_SCHEMES = ("redis", "rediss", "unix")


class CliError(MeetqError):
    """Ends a command with `message` on stderr and exit status `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGTERM when we die, even by SIGKILL (Linux only),
    so a killed demo leaves no redis-server or AI node behind."""
    import signal
    import sys

    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def check_redis_url(url: str) -> str:
    """A usable Redis URL, or a `CliError` (exit 2) saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise CliError(
            f"bad Redis URL {url!r}: scheme must be redis://, rediss:// or unix://", EXIT_USAGE
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise CliError(f"bad Redis URL {url!r}: no socket path", EXIT_USAGE)
        return url
    try:
        port = parts.port
    except ValueError as exc:
        raise CliError(f"bad Redis URL {url!r}: {exc}", EXIT_USAGE) from None
    if port == 0:
        raise CliError(f"bad Redis URL {url!r}: port 0", EXIT_USAGE)
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise CliError(f"bad Redis URL {url!r}: database must be a number", EXIT_USAGE)
    return url


def unreachable(url: str, exc: BaseException) -> CliError:
    """The one-line error for a Redis that does not answer."""
    cause = exc.__cause__ if isinstance(exc, MeetqError) and exc.__cause__ else exc
    text = str(cause).strip() or type(cause).__name__
    return CliError(f"cannot reach Redis at {url}: {text}", EXIT_UNREACHABLE)


def missing_extra(extra: str, exc: ImportError) -> CliError:
    return CliError(
        f"this command needs meetq[{extra}] (pip install 'meetq[{extra}]'): {exc}", EXIT_MISSING
    )


def redis_client(url: str) -> redis.asyncio.Redis:
    """A redis-py asyncio client for `url` with the timeouts the commands want (a server
    that stops answering fails a call instead of hanging it; keepalive only over TCP)."""
    import redis.asyncio

    options: dict[str, Any] = {"socket_connect_timeout": 5.0, "socket_timeout": 30.0}
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url, **options)
    return client
