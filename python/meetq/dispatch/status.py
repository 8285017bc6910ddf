"""A dispatched task's durable status: the hash `meetq:{Q}:status:<id>` and its scripts.

The dispatcher creates the hash in the same MULTI as the publish (`create_commands`):

    status        pending -> completed | failed | timeout | cancelled
    deadline_ms   absolute deadline, Redis server time (ms); the message carries it too
                  (`expires_at`): a worker drops a delivery past it unstarted, the owning
                  dispatcher's timer wheel ends the task TIMEOUT
    request       the TaskRequest as JSON (get_task_status answers from any process)
    reply_to      the owning dispatcher's reply list (same hash slot)
    processed_at  epoch seconds (the dispatch time is the request's created_at)
    result, error the outcome (result as JSON)

PROCESSING is not written per delivery: get_task_status reports a `pending` task that a
worker has leased (its id in the queue's `inflight` zset) as PROCESSING. The queue's
worker side writes the outcome in its final script; the two transitions owned here are
`task_timeout.lua` and `task_cancel.lua`, both "only if not final", so the first final
outcome wins (the cancel also marks the queued body, so the dequeue drops it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from meetq.dispatch.types import FINAL_STATUSES, TaskRequest, TaskStatus
from meetq.errors import MalformedMessageError

_STATUSES = {s.value: s for s in TaskStatus}


class LuaScript:
    """One Lua file of `meetq._redis.lua`, called by EVALSHA (reloaded after NOSCRIPT)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, filename: str) -> None:
        self.name = filename
        self.source = resources.files("meetq._redis").joinpath("lua", filename).read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def run(
        self, execute: Callable[..., Awaitable[Any]], keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await execute(*self.command(keys, args))
        except NoScriptError:
            await execute("SCRIPT", "LOAD", self.source)
            return await execute(*self.command(keys, args))


task_timeout = LuaScript("task_timeout.lua")
task_cancel = LuaScript("task_cancel.lua")


def create_commands(
    key: str,
    request_json: bytes,
    deadline_ms: int,
    reply_to: str,
    ttl_ms: int,
) -> list[tuple[Any, ...]]:
    """The commands that create a task's status hash (sent inside the publish MULTI)."""
    return [
        (
            "HSET",
            key,
            "status",
            "pending",
            "deadline_ms",
            deadline_ms,
            "request",
            request_json,
            "reply_to",
            reply_to,
        ),
        ("PEXPIRE", key, ttl_ms),
    ]


@dataclass(slots=True)
class TaskState:
    """A decoded status hash."""

    request: TaskRequest
    status: TaskStatus
    deadline_ms: int
    result: Any
    error: str | None
    processed_at: float
    started_at: float

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


def decode_state(fields: dict[bytes, bytes]) -> TaskState:
    """HGETALL of a status hash -> TaskState; raises MalformedMessageError on bad bytes."""
    get = fields.get
    raw_request = get(b"request")
    if raw_request is None:
        raise MalformedMessageError("status hash without a request")
    try:
        request = TaskRequest.from_dict(orjson.loads(raw_request))
    except orjson.JSONDecodeError as exc:
        raise MalformedMessageError(f"undecodable request: {exc}") from exc
    return TaskState(
        request=request,
        status=parse_status(get(b"status")),
        deadline_ms=int(get(b"deadline_ms") or 0),
        result=decode_result(get(b"result")),
        error=_text(get(b"error")) or None,
        processed_at=float(get(b"processed_at") or 0.0),
        started_at=float(get(b"started_at") or 0.0),
    )


__all__ = [
    "LuaScript",
    "TaskState",
    "create_commands",
    "decode_result",
    "decode_state",
    "parse_status",
    "task_cancel",
    "task_timeout",
]
