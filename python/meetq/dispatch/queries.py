"""A task's status read and its cancellation, by task id, from any process.

Both work from Redis alone (the status hash `meetq:{Q}:status:<id>`, the queue named in
the id), so any process can ask about or cancel a task another dispatcher sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio

from meetq._redis.keys import QueueKeys
from meetq._redis.links import Link
from meetq.dispatch.status import decode_state, parse_status, task_cancel, task_timeout
from meetq.dispatch.types import TaskRequest, TaskStatus, queue_of
from meetq.errors import TaskNotFoundError

Retrying = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""Runs a call again after a lost connection (the dispatcher's retry budget)."""


def status_key(task_id: str) -> str:
    """The status hash of `task_id`; TaskNotFoundError when it is not a task id."""
    queue = queue_of(task_id)
    if queue is None:
        raise TaskNotFoundError(f"{task_id!r} is not a task id of a dispatcher")
    return QueueKeys(queue).status(task_id)


async def read_task_status(
    client: redis.asyncio.Redis,
    cmd: Link,
    retrying: Retrying,
    task_id: str,
    server_ms: Callable[[], float],
) -> tuple[TaskRequest, TaskStatus]:
    """The request and status of `task_id`. A task past its deadline that nothing ended
    is ended TIMEOUT now (atomically, by task_timeout.lua)."""
    key = status_key(task_id)
    inflight = QueueKeys(queue_of(task_id) or "").named("inflight")

    async def read() -> list[Any]:
        # one round trip, one slot: the hash, and whether a worker holds the task now
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(key)
        pipe.zscore(inflight, task_id)
        got: list[Any] = await pipe.execute()
        return got

    fields, leased = await retrying(read)
    if not fields:
        raise TaskNotFoundError(f"no task {task_id!r}")
    state = decode_state(fields)
    if not state.final and state.deadline_ms and server_ms() > state.deadline_ms:
        reply = await task_timeout.run(cmd.execute, [key], ["timed out"])
        if reply and reply[0] != b"missing":
            state.status = parse_status(reply[0])
    elif state.status is TaskStatus.PENDING and leased is not None:
        # PROCESSING is not written per task: a pending task a worker has leased is it
        state.status = TaskStatus.PROCESSING
    return state.request, state.status


async def cancel_in_redis(
    client: redis.asyncio.Redis,
    cmd: Link,
    retrying: Retrying,
    task_id: str,
    result_ttl: float,
) -> bool:
    """Runs task_cancel.lua: True when this call cancelled the task, False when it had
    already ended or is unknown."""
    queue = queue_of(task_id)
    if queue is None:
        return False
    keys = QueueKeys(queue)
    key = keys.status(task_id)

    async def read() -> bytes | None:
        value: bytes | None = await client.hget(key, "reply_to")  # type: ignore[misc]
        return value

    reply_to = await retrying(read)
    script_keys = [key, keys.named("msg")]
    if reply_to is not None:
        script_keys.append(reply_to.decode())
    args = [task_id, int(result_ttl * 1000), keys.cancel_channel]
    outcome = await retrying(lambda: task_cancel.run(cmd.execute, script_keys, args))
    return bool(outcome == 1)


__all__ = ["Retrying", "cancel_in_redis", "read_task_status", "status_key"]
