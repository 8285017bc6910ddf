"""The client's in-flight state: one `Call` per request_id, one `SetupRecord` per setup."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from meetq.ai import protocol as p
from meetq.ai.errors import ProtocolError, StackFlowError, error_for


@dataclass(eq=False)
class SetupRecord:
    """What a caller asked to set up: enough to set it up again after a node restart."""

    handle: str  # the work_id returned to the caller
    unit: str
    request: dict[str, Any]  # the setup envelope's data
    live: str | None = None  # the work_id currently serving it
    resetup: asyncio.Task[None] | None = None


class Call:
    """One request waiting for its reply (or its stream of replies)."""

    __slots__ = ("control", "fut", "parts", "queue", "rid", "stream", "waiter", "work_id")

    def __init__(
        self, fut: asyncio.Future[Any] | None, work_id: str, *, stream: bool, control: bool
    ) -> None:
        self.fut = fut  # resolved with the final value (infer) or the Reply (control calls)
        self.work_id = work_id
        self.stream = stream  # stream(): deltas go to `queue` as they arrive
        self.control = control
        self.rid = ""
        self.parts: list[str] = []
        self.queue: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def push(self, item: Any) -> None:
        self.queue.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def ack_error(ack: bytes, action: str) -> StackFlowError:
    """A node RPC answered something other than the "None" acknowledgement."""
    if ack == p.NOT_ACTION:
        return error_for(p.NO_SUCH_ACTION, f"node has no action {action!r}")
    try:
        reply = p.parse_reply(ack)
    except ProtocolError:
        return ProtocolError(f"unexpected answer to {action}: {ack[:200]!r}")
    return error_for(reply.code, reply.message)
