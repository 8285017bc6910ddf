"""`Deadlines`: a dispatcher's outstanding deadlines, and what runs when one passes.

Every outstanding task has a deadline on the native timer wheel; one loop timer is armed
for the earliest, so the cost is O(1) per task however many are outstanding. At expiry
the dispatcher runs `task_timeout.lua` for the expired tasks (`time_out`, one pipelined
write), which ends each TIMEOUT only if no other outcome came first.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import NoScriptError

from meetq._native import TimerWheel
from meetq._redis import scripts
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Link
from meetq.dispatch.types import queue_of


def now_ms() -> int:
    """The wheel's clock: monotonic milliseconds."""
    return int(time.monotonic() * 1000)


class Deadlines:
    """The timer wheel plus the one loop timer armed for its earliest deadline;
    `on_expired(ids)` gets the ids whose deadline passed (the caller filters them)."""

    def __init__(self, on_expired: Callable[[list[str]], None]) -> None:
        self._wheel: Any = TimerWheel(now_ms())
        self._on_expired = on_expired
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def insert(self, deadline_ms: int, tid: str) -> int:
        handle: int = self._wheel.insert(deadline_ms, tid)
        return handle

    def cancel(self, handle: int) -> None:
        self._wheel.cancel(handle)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arms the timer from now on (for deadlines inserted before, too)."""
        self._loop = loop
        self.arm()

    def stop(self) -> None:
        """Disarms the timer; nothing expires until `start` again."""
        self._loop = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    def arm(self) -> None:
        """Keeps the one loop timer armed for the wheel's earliest deadline."""
        deadline_ms = self._wheel.next_deadline()
        if deadline_ms is None or self._loop is None or deadline_ms >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline_ms
        delay = max(deadline_ms / 1000.0 - time.monotonic(), 0.001)
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        expired = self._wheel.advance(now_ms())
        if expired:
            self._on_expired(expired)
        self.arm()


async def time_out(cmd: Link, tids: list[str], result_ttl_ms: int) -> list[Any]:
    """Runs task_timeout.lua for each of `tids` (one pipelined write) and returns each
    script's answer, or the exception when Redis could not be reached."""
    script = scripts.task_timeout
    commands = [
        script.command(QueueKeys(queue_of(t) or "").all, [t, "timed out", result_ttl_ms])
        for t in tids
    ]
    try:
        replies: list[Any] = await cmd.execute_many(commands)
        if any(isinstance(r, NoScriptError) for r in replies):
            await cmd.execute("SCRIPT", "LOAD", script.source)
            replies = await cmd.execute_many(commands)
    except Exception as exc:
        replies = [exc] * len(tids)
    return replies


__all__ = ["Deadlines", "now_ms", "time_out"]
