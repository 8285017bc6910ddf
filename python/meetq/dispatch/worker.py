"""`ServiceWorker`: the consuming side of a service queue, with handlers taking TaskRequest.

It is a `RedisMessageQueue` of the service's queue whose handlers rebuild the
`TaskRequest` from the message and call the registered function, so retries, the DLQ,
leases, replies and the final status are the queue's (the final
outcome, the status and the reply to the dispatcher are written in one script with the
ack; a cancelled or expired task is dropped at dequeue and never runs).

Cancelling a running task: the state is durable in Redis (`task_cancel.lua` marks the body);
the script's PUBLISH on the queue's cancel channel only pokes. On a poke, and every
`cancel_check_interval` seconds for whatever is still running (a poke lost while the
subscription reconnected), the worker reads the statuses of its running async handlers
and cancels those marked cancelled. A plain `def` handler runs inline and cannot be
interrupted; it finishes and its result is recorded, but the status stays CANCELLED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio

from meetq._core.backoff import backoff
from meetq._core.eager import ASYNC, handler_kind
from meetq._redis.cluster import key_slot, master_url
from meetq._redis.keys import QueueKeys
from meetq.dispatch.types import TaskRequest, default_routes
from meetq.queue import RedisMessageQueue
from meetq.queue.message import Message

log = logging.getLogger("meetq.dispatch.worker")

TaskHandler = Callable[[TaskRequest], Any]


def _request(msg: Message) -> TaskRequest:
    req = TaskRequest.from_dict(msg.payload)
    req.id = msg.id
    return req


class ServiceWorker:
    """Runs a service's task handlers. `service_name` picks the queue from the default
    routes (ai-service -> ai_tasks, ...) unless `queue_name` is given; other keyword
    arguments go to the `RedisMessageQueue`."""

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis,
        service_name: str,
        *,
        queue_name: str | None = None,
        workers: int = 4,
        cancel_check_interval: float = 1.0,
        **queue_options: Any,
    ) -> None:
        if queue_name is None:
            by_service = {r.service_name: r.queue_name for r in default_routes()}
            if service_name not in by_service:
                raise ValueError(f"no default route for service {service_name!r}; name a queue")
            queue_name = by_service[service_name]
        self.service_name = service_name
        self.queue_name = queue_name
        self.keys = QueueKeys(queue_name)
        self.queue = RedisMessageQueue(redis_or_url, queue_name, workers=workers, **queue_options)
        self._client = self.queue.endpoint.client  # status reads and the cancel pokes
        self.cancel_check_interval = cancel_check_interval
        self._running: dict[str, asyncio.Future[Any]] = {}
        self._cancelling: set[str] = set()
        self._watch: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None
        self.cancelled_running = 0
        """Running handlers this worker cancelled on cancel_task."""

    def register_handler(self, task_type: str, fn: TaskHandler, in_thread: bool = False) -> None:
        """fn(request) -> dict | None, sync or async; an exception fails the attempt."""
        if handler_kind(fn, in_thread) == ASYNC:
            self.queue.register_handler(str(task_type), self._async_adapter(fn))
        else:

            def run(msg: Message) -> Any:
                return fn(_request(msg))

            self.queue.register_handler(str(task_type), run, in_thread=in_thread)

    def _async_adapter(self, fn: TaskHandler) -> Callable[[Message], Any]:
        running, cancelling = self._running, self._cancelling

        async def run(msg: Message) -> Any:
            req = _request(msg)
            # The queue's runner already runs this in a task of its own per run (started
            # eagerly, so an asyncio.timeout() in the handler is the handler's):
            # cancel_task cancels that task, and the cancellation it asked for is taken
            # back here (uncancel), so only a stop's cancellation propagates. No second
            # task per run.
            task = asyncio.current_task()
            if task is None:  # not under the runner (never on the queue's path)
                return await fn(req)
            running[req.id] = task
            try:
                return await fn(req)
            except asyncio.CancelledError:
                if req.id in cancelling and task.uncancel() == 0:
                    return None  # cancel_task: the status is already CANCELLED
                raise
            finally:
                running.pop(req.id, None)
                cancelling.discard(req.id)

        return run

    async def start(self) -> None:
        await self.queue.start()
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._watch_pokes(), name="meetq-cancel-pokes")
        self._sweep = loop.create_task(self._sweep_loop(), name="meetq-cancel-sweep")

    async def stop(self) -> None:
        for task in (self._watch, self._sweep):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watch = self._sweep = None
        await self.queue.stop()

    async def __aenter__(self) -> ServiceWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def get_stats(self) -> dict[str, Any]:
        stats = await self.queue.get_stats()
        stats["cancelled_running"] = self.cancelled_running
        return stats

    # ------------------------------------------------------------------ cancellation

    async def _cancel_if_cancelled(self, ids: list[str]) -> None:
        """Reads the stored bodies of running tasks; cancels those task_cancel.lua marked
        (first byte "c")."""
        ids = [i for i in ids if i in self._running]
        if not ids:
            return
        bodies = await self._client.hmget(self.keys.named("msg"), ids)  # type: ignore[misc]
        for tid, body in zip(ids, bodies, strict=True):
            task = self._running.get(tid)
            if body is not None and body[:1] == b"c" and task is not None and not task.done():
                self._cancelling.add(tid)
                self.cancelled_running += 1
                task.cancel()

    async def _cluster_poke_client(self) -> redis.asyncio.Redis | None:
        """On a Cluster, a client of our own to SUBSCRIBE on (else None: the queue's
        client). redis-py's async RedisCluster has no Pub/Sub; a classic PUBLISH reaches
        every node of a cluster, so a plain client of the master serving the queue's slot
        (looked up again after each loss: a failover moves it) hears the pokes."""
        url = self.queue.endpoint.url
        if url is None or not url.startswith("redis+cluster://"):
            return None
        node = await master_url(url, key_slot(self.keys.prefix))
        client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(node, socket_connect_timeout=5.0)
        return client

    async def _watch_pokes(self) -> None:
        attempt = 0
        while True:
            own: redis.asyncio.Redis | None = None
            pubsub: Any = None
            try:
                own = await self._cluster_poke_client()
                pubsub = (own or self._client).pubsub()
                await pubsub.subscribe(self.keys.cancel_channel)
                attempt = 0
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if msg is not None and msg.get("type") == "message":
                        data = msg["data"]
                        tid = data.decode() if isinstance(data, bytes) else str(data)
                        await self._cancel_if_cancelled([tid])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("worker %s: cancel subscription lost (%r)", self.service_name, exc)
                await asyncio.sleep(backoff(attempt))  # between reconnect attempts
                attempt += 1
            finally:
                with contextlib.suppress(Exception):
                    if pubsub is not None:
                        await pubsub.aclose()
                    if own is not None:
                        await own.aclose()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cancel_check_interval)  # a period, not synchronization
            try:
                await self._cancel_if_cancelled(list(self._running))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("worker %s: cancel sweep failed (%r)", self.service_name, exc)


__all__ = ["ServiceWorker"]
