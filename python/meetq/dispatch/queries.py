"""A task's status read and its cancellation, by task id, from any process.

Both work from Redis alone (the queue and the done hash the id names, `status.py`), so
any process can ask about or cancel a task another dispatcher sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio

from meetq._redis import scripts
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Link
from meetq.dispatch.status import decode_body, decode_state, done_key
from meetq.dispatch.types import TaskRequest, TaskStatus, queue_of
from meetq.errors import MalformedMessageError, TaskNotFoundError

Retrying = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""Runs a call again after a lost connection (the dispatcher's retry budget)."""


async def read_task_status(
    client: redis.asyncio.Redis,
    cmd: Link,
    retrying: Retrying,
    task_id: str,
    server_ms: Callable[[], float],
    result_ttl: float,
) -> tuple[TaskRequest, TaskStatus]:
    """The request and status of `task_id`. A task past its deadline that nothing ended
    is ended TIMEOUT now (atomically, by task_timeout.lua)."""
    done = done_key(task_id)
    keys = QueueKeys(queue_of(task_id) or "")
    msg = keys.named("msg")

    async def read() -> list[Any]:
        # one round trip, one slot: the outcome, the body, whether a worker holds it now
        pipe = client.pipeline(transaction=False)
        pipe.hmget(done, [task_id, task_id + "\0r"])
        pipe.hget(msg, task_id)
        pipe.zscore(keys.named("inflight"), task_id)
        got: list[Any] = await pipe.execute()
        return got

    (record, kept_body), body, leased = await retrying(read)
    if record is None and body is None:
        raise TaskNotFoundError(f"no task {task_id!r}")
    state = decode_state(record, kept_body or body)
    if not state.final and state.deadline_ms and server_ms() > state.deadline_ms:
        ttl_ms = int(result_ttl * 1000)
        args = [task_id, "timed out", ttl_ms]
        reply = await scripts.task_timeout.run(cmd.execute, keys.all, args)
        if reply and reply[0] == b"final":
            state = decode_state(reply[1], kept_body or body)
        elif reply and reply[0] == b"timeout":
            state.status = TaskStatus.TIMEOUT
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
    already ended or is unknown (an id that names no deadline second is no task)."""
    queue = queue_of(task_id)
    if queue is None:
        return False
    keys = QueueKeys(queue)
    msg = keys.named("msg")

    async def read() -> bytes | None:
        value: bytes | None = await client.hget(msg, task_id)  # type: ignore[misc]
        return value

    body = await retrying(read)
    script_keys = keys.all
    if body is not None:
        try:
            reply_to = decode_body(body).reply_to
        except MalformedMessageError:
            reply_to = ""
        if reply_to:
            script_keys.append(reply_to)
    args = [task_id, int(result_ttl * 1000), keys.cancel_channel]
    outcome = await retrying(lambda: scripts.task_cancel.run(cmd.execute, script_keys, args))
    return bool(outcome == 1)


__all__ = ["Retrying", "cancel_in_redis", "read_task_status"]
