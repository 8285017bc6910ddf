"""The one reconnect policy: which errors are worth retrying, `retrying` for a call with a
budget (then one `MeetqConnectionError` with the cause kept), and `Outage` for a loop that
keeps going (a fetcher, a renewer, a subscriber)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from meetq._core.backoff import backoff
from meetq.errors import MeetqConnectionError, MeetqError, RedisCommandError

log = logging.getLogger("meetq.redis")

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,  # includes LOADING (BusyLoadingError)
    RedisTimeoutError,
    ReadOnlyError,  # a replica (a failover demoted our server, or the URL names a replica)
    MeetqConnectionError,
    ConnectionError,
    OSError,
    TimeoutError,
)
"""Errors after which the same call may succeed later or on a new connection."""

_TRANSIENT_REPLIES = ("MASTERDOWN", "READONLY", "LOADING", "TRYAGAIN", "CLUSTERDOWN")
"""Error replies that redis-py leaves as a plain ResponseError but that mean "not now"."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the call that raised `exc` (after a pause) may succeed."""
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


async def retrying(call: Callable[[], Awaitable[T]], budget: float, what: str) -> T:
    """Runs `call`, retrying `TRANSIENT` errors with backoff within `budget` seconds, then
    raises `MeetqConnectionError` ("redis unavailable for <what>") with the cause kept."""
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                if isinstance(exc, ResponseError) and not isinstance(exc, MeetqError):
                    # e.g. a key of the wrong type, written by someone else
                    raise RedisCommandError(f"redis refused a command of {what}: {exc}") from exc
                raise
            pause = backoff(attempt)
            attempt += 1
            if time.monotonic() + pause > deadline:
                raise MeetqConnectionError(
                    f"redis unavailable for {what}: {type(exc).__name__}: {exc}"
                ) from exc
            log.debug("%s: retrying after %r", what, exc)
            await asyncio.sleep(pause)


class Outage:
    """The retry policy of a long-running loop (a fetcher, a subscriber): it keeps going.

    `failed(exc)` returns the pause before the next try (backoff with jitter, capped at
    `cap`), logs the first failure of an outage at WARNING and the rest at DEBUG; once the
    outage has lasted `budget` seconds it logs ONE error and sets `error` to a
    `MeetqConnectionError` with the cause kept (`on_down` is told, e.g. to mark the
    component unhealthy). `succeeded()` ends the outage (`on_up`, logged at INFO when an
    error had been reported)."""

    def __init__(
        self,
        what: str,
        budget: float,
        on_down: Callable[[MeetqConnectionError], None] | None = None,
        on_up: Callable[[], None] | None = None,
        cap: float = 5.0,
    ) -> None:
        self.what = what
        self.budget = budget
        self.on_down = on_down
        self.on_up = on_up
        self.cap = cap
        self.error: MeetqConnectionError | None = None
        self.attempt = 0
        self._since: float | None = None

    def failed(self, exc: BaseException) -> float:
        now = time.monotonic()
        if self._since is None:
            self._since = now
            log.warning("%s: %r; reconnecting with backoff", self.what, exc)
        else:
            log.debug("%s: still failing: %r", self.what, exc)
        if self.error is None and now - self._since >= self.budget:
            error = MeetqConnectionError(
                f"redis unavailable for {self.what} for {now - self._since:.1f}s: "
                f"{type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            self.error = error
            log.error("%s: %s (still retrying)", self.what, error)
            if self.on_down is not None:
                self.on_down(error)
        pause = backoff(self.attempt, cap=self.cap)
        self.attempt += 1
        return pause

    def succeeded(self) -> None:
        if self._since is None:
            return
        if self.error is not None:
            log.info("%s: redis reachable again", self.what)
            if self.on_up is not None:
                self.on_up()
        self._since = None
        self.error = None
        self.attempt = 0
