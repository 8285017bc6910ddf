"""Where a dispatched task's durable status lives, and how it is read.

While the queue holds the task, its stored body in the queue's `msg` hash is its state:
the request, the owning dispatcher's reply list, the absolute deadline (`expires_at`,
Redis server time; a worker drops a delivery past it unstarted, the owning dispatcher's
timer wheel ends the task TIMEOUT). A `pending` task that a worker has leased (its id in
`inflight`) is PROCESSING. Its final outcome is recorded where the id says: the hash
`meetq:{Q}:done:<second>` of its deadline's second (the id is `<unique>.<second>@<Q>`),
field id -> the reply object, id\0r -> the body, for result_ttl after that second.

Nothing is written per task at dispatch beyond the body, and a batch of outcomes is one
HLEN (a type check), HSET and PEXPIREAT per second of deadlines: no key and no TTL per
task (at 10,000 tasks/s and a 1 h result_ttl, per-task status hashes were 36 M keys
expiring one by one). Every outcome goes through the queue scripts' `record_outcomes`
(prelude.lua): the worker's final scripts, and the dispatcher's two transitions
`task_timeout.lua` and `task_cancel.lua` (`meetq._redis.scripts`), both "only if nothing is
recorded", so the first final outcome wins. Both mark the stored body (first byte "t" / "c"): the
dequeue drops it unstarted, and the final script reads the record only for a marked
body (a later result is recorded under the first status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from meetq._redis.keys import QueueKeys
from meetq.dispatch.types import (
    FINAL_STATUSES,
    TaskRequest,
    TaskStatus,
    deadline_second_of,
    queue_of,
)
from meetq.errors import MalformedMessageError, TaskNotFoundError
from meetq.queue.message import Codec, Message

_STATUSES = {s.value: s for s in TaskStatus}


@dataclass(slots=True)
class TaskState:
    """A task's status as Redis holds it (`decode_state`)."""

    request: TaskRequest
    status: TaskStatus
    deadline_ms: int
    result: Any
    error: str | None
    processed_at: float

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_result(raw: Any) -> Any:
    """A stored result field: JSON written by the worker's outcome script."""
    if raw is None or raw is False:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _text(raw)


def parse_status(value: Any) -> TaskStatus:
    text = _text(value) or ""
    try:
        return _STATUSES[text]
    except KeyError:
        raise MalformedMessageError(f"unknown task status {text!r}") from None


_BODIES = Codec("json")
"""A dispatcher's stored bodies: JSON (the dispatcher's codec), after the priority digit."""


_MARKED = {b"c": TaskStatus.CANCELLED, b"t": TaskStatus.TIMEOUT}
"""A stored body's first byte once task_cancel.lua / task_timeout.lua recorded an outcome."""


def decode_body(body: bytes) -> Message:
    """A dispatched task's stored body (priority digit, then the message) -> the message;
    raises MalformedMessageError on bad bytes."""
    return _BODIES.decode(body[1:])


def done_key(task_id: str) -> str:
    """The done hash a dispatcher-made task id names; TaskNotFoundError for any other."""
    queue, second = queue_of(task_id), deadline_second_of(task_id)
    if queue is None or second is None:
        raise TaskNotFoundError(f"{task_id!r} is not a task id of a dispatcher")
    return QueueKeys(queue).done(second)


def decode_state(record: bytes | None, body: bytes | None) -> TaskState:
    """A task's recorded outcome (its reply object; None while it has none) and its stored
    body -> TaskState; raises MalformedMessageError on bad bytes."""
    if body is None:
        raise MalformedMessageError("task without a stored body")
    msg = decode_body(body)
    try:
        request = TaskRequest.from_dict(msg.payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"undecodable request: {exc!r}") from exc
    deadline_ms = int(msg.expires_at * 1000)
    if record is None:
        status = _MARKED.get(body[:1], TaskStatus.PENDING)
        return TaskState(request, status, deadline_ms, None, None, 0.0)
    try:
        reply = orjson.loads(record)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessageError(f"undecodable outcome: {exc}") from exc
    return TaskState(
        request=request,
        status=parse_status(reply.get("status")),
        deadline_ms=deadline_ms,
        result=reply.get("result"),
        error=_text(reply.get("error")) or None,
        processed_at=float(reply.get("processed_at") or 0.0),
    )


__all__ = [
    "TaskState",
    "decode_body",
    "decode_result",
    "decode_state",
    "done_key",
    "parse_status",
]
