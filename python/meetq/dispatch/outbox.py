"""`Outbox`: the tasks a dispatcher stages in one loop turn, published in one MULTI.

Every dispatch call of a loop turn adds its tasks here; the MULTI holds, per queue, the
queue's plain-command publish transition for fresh ids (bodies, ready lists by priority,
the published counter, the doorbell). The body is all a task's status needs until its
outcome is recorded (`status.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from meetq._core.backoff import backoff
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Link
from meetq._redis.retry import TRANSIENT
from meetq.dispatch.status import done_key
from meetq.dispatch.types import TaskRequest, queue_of
from meetq.errors import MeetqConnectionError
from meetq.queue.message import Codec

PRIORITY_DIGITS = (b"0", b"1", b"2", b"3")
"""A stored body's first byte: its priority (the queue's dequeue reads it)."""


class SharedDone(asyncio.Future[None]):
    """The outcome of an outbox's MULTI, awaited by every call of its loop turn. A waiter
    that is cancelled must not cancel it for the others; instead of a shield per call (a
    future and two callbacks each, a sixth of the dispatcher's time per single dispatch),
    it refuses cancellation, so a cancelled waiter's CancelledError lands once the write
    has ended (asyncio's rule for a future that cannot be cancelled)."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class Outbox:
    """Tasks staged in one loop turn, published together in one MULTI."""

    __slots__ = ("done", "ids", "published", "queues")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done = SharedDone(loop=loop)
        self.ids: list[str] = []
        self.published: list[Callable[[], None]] = []
        """What runs once the MULTI is written (`TaskDispatcher.submit`'s on_published)."""
        # queue -> [its keys, msg hash field/value pairs, ready ids per priority]
        self.queues: dict[str, tuple[PublishKeys, list[Any], list[list[str]]]] = {}

    def add(self, tid: str, keys: PublishKeys, priority: int, body: bytes) -> None:
        self.ids.append(tid)
        queued = self.queues.get(keys.queue)
        if queued is None:
            queued = self.queues[keys.queue] = (keys, [], [[], [], [], []])
        queued[1].extend((tid, body))
        queued[2][priority].append(tid)

    def probe(self) -> tuple[str, str, str]:
        """What tells, after a lost reply, whether EXEC ran: the first task's id, its body's
        hash and its done hash (an outcome is recorded as the body is deleted)."""
        tid = self.ids[0]
        return tid, QueueKeys(queue_of(tid) or "").named("msg"), done_key(tid)

    def commands(self) -> list[tuple[Any, ...]]:
        """Per queue, the queue's plain-command publish transition for fresh ids (bodies,
        ready lists by priority, published counter, doorbell)."""
        out: list[tuple[Any, ...]] = []
        for keys, bodies, ready in self.queues.values():
            out.append(("HSET", keys.msg, *bodies))
            for p, group in enumerate(ready):
                if group:
                    out.append(("RPUSH", keys.ready[p], *group))
            out += [
                ("HINCRBY", keys.stats, "published", len(bodies) // 2),
                ("RPUSH", keys.wake, 1),
                ("LTRIM", keys.wake, 0, 0),
            ]
        return out


class PublishKeys:
    """The key names a publish MULTI writes for one queue, made once per queue."""

    __slots__ = ("msg", "queue", "ready", "stats", "wake")

    def __init__(self, keys: QueueKeys) -> None:
        self.queue = keys.queue
        self.msg = keys.named("msg")
        self.ready = tuple(keys.ready(p) for p in range(4))
        self.stats = keys.named("stats")
        self.wake = keys.named("wake")


async def publish(cmd: Link, box: Outbox, retry_budget: float) -> None:
    """Sends the outbox's MULTI; after a lost connection, the first task's body or outcome
    tells whether the all-or-nothing transaction was applied before it is sent again."""
    commands = box.commands()
    deadline = time.monotonic() + retry_budget
    attempt = 0
    while True:
        try:
            if attempt and await _applied(cmd, *box.probe()):
                return
            await cmd.transaction(commands)
            return
        except TRANSIENT as exc:
            pause = backoff(attempt)
            attempt += 1
            if time.monotonic() + pause > deadline:
                raise MeetqConnectionError(f"dispatch failed: {exc}") from exc
            await asyncio.sleep(pause)


async def _applied(cmd: Link, tid: str, msg: str, done: str) -> bool:
    return bool(await cmd.execute("HEXISTS", msg, tid) or await cmd.execute("HEXISTS", done, tid))


def encode_task(
    req: TaskRequest, reply_to: str, source: str, codec: Codec, deadline_ms: int
) -> bytes:
    """A request (id, created_at and priority set) as the queue's stored body, its deadline
    in Redis server time (the worker drops a delivery past the message's `expires_at`).
    The request is encoded once, as a JSON fragment of the body."""
    request_json = codec.dump(req.to_dict(), f"task {req.id}")
    priority = int(req.priority)
    fields = {  # Message.to_dict() of the stored message, without making the Message
        "id": req.id,
        "type": str(req.type),
        "priority": priority,
        "payload": orjson.Fragment(request_json),
        "timestamp": req.created_at,
        "retry_count": 0,
        "max_retries": req.max_retries,
        "timeout": req.timeout,
        "source": source,
        "destination": "",
        "deliver_at": 0.0,
        "reply_to": reply_to,
        "expires_at": deadline_ms / 1000,
    }
    return PRIORITY_DIGITS[priority] + codec.dump(fields, f"message {req.id}")


__all__ = ["PRIORITY_DIGITS", "Outbox", "PublishKeys", "SharedDone", "encode_task", "publish"]
