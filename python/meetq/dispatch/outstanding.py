"""An outstanding task of a dispatcher process, and the outcomes that end it.

`PendingTask` is what the dispatcher keeps per task until its first outcome; the two
ways an outcome arrives are decoded here into a `TaskResponse`: a reply written by the
worker's final script (`decode_replies`, `response_of_reply`), or the answer of
`task_timeout.lua` when the deadline passed first (`response_of_timeout`: the status
Redis decided, or TIMEOUT when Redis could not be asked).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from meetq.dispatch.types import TaskResponse, TaskStatus

Callback = Callable[[TaskResponse], Any]

log = logging.getLogger("meetq.dispatch")

_REPLY_STATUS = {
    "completed": TaskStatus.COMPLETED,
    "failed": TaskStatus.FAILED,
    "timeout": TaskStatus.TIMEOUT,
    "cancelled": TaskStatus.CANCELLED,
}


class PendingTask:
    """One outstanding task of this process."""

    __slots__ = (
        "callback",
        "dispatched_at",
        "future",
        "handle",
        "on_failed",
        "timing_out",
    )

    def __init__(self, dispatched_at: float) -> None:
        self.dispatched_at = dispatched_at
        self.handle = -1
        self.future: asyncio.Future[TaskResponse] | None = None
        self.callback: Callback | None = None
        self.on_failed: Callable[[BaseException], None] | None = None
        self.timing_out = False


def call_back(
    callback: Callback, response: TaskResponse, tasks: set[asyncio.Future[Any]], owner: str
) -> None:
    """Calls a dispatch_async callback; an awaitable it returns runs as a task kept in
    `tasks` (the dispatcher's, awaited at stop). A failing callback is logged, never
    raised into the reply reader."""
    try:
        result = callback(response)
    except Exception:
        log.exception("dispatcher %s: callback for %s failed", owner, response.task_id)
        return
    if result is not None and inspect.isawaitable(result):
        task = asyncio.ensure_future(result)
        tasks.add(task)

        def done(task: asyncio.Future[Any]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("dispatcher %s: async callback failed", owner, exc_info=task.exception())

        task.add_done_callback(done)


def decode_replies(raw: bytes) -> list[tuple[str, dict[str, Any]]] | None:
    """A reply list element -> its (task id, reply) pairs, or None when it is not one.
    An element is one reply object, or (what a worker's batched ack writes) the JSON
    array of the replies of one call."""
    try:
        got = orjson.loads(raw)
        if isinstance(got, dict):
            return [(str(got["id"]), got)]
        return [(str(reply["id"]), reply) for reply in got]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def response_of_reply(tid: str, reply: dict[str, Any]) -> TaskResponse:
    """The TaskResponse of a decoded reply (an unknown status counts as FAILED)."""
    status = _REPLY_STATUS.get(str(reply.get("status")), TaskStatus.FAILED)
    result = reply.get("result")
    return TaskResponse(
        tid,
        status,
        result if isinstance(result, dict) or result is None else {"value": result},
        reply.get("error"),
        float(reply.get("processed_at") or time.time()),
    )


def response_of_timeout(tid: str, reply: Any) -> TaskResponse:
    """The TaskResponse of a task_timeout.lua answer: the final outcome that came first,
    else TIMEOUT (with the error that kept Redis from recording it, if any)."""
    if isinstance(reply, list) and len(reply) == 2 and reply[0] == b"final":
        try:
            recorded = orjson.loads(reply[1])
        except orjson.JSONDecodeError:
            recorded = None
        if isinstance(recorded, dict):
            return response_of_reply(tid, recorded)
    error = "timed out"
    if isinstance(reply, Exception):
        error = f"timed out (status not recorded: {reply})"
    return TaskResponse(tid, TaskStatus.TIMEOUT, None, error, time.time())


__all__ = [
    "Callback",
    "PendingTask",
    "call_back",
    "decode_replies",
    "response_of_reply",
    "response_of_timeout",
]
