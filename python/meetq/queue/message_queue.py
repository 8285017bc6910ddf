"""`RedisMessageQueue`: the durable, prioritized, at-least-once queue between services, as
a small facade over its parts (each usable on its own):

    config.QueueConfig    every knob, checked once
    publisher.Publisher   publish / publish_batch (the dispatcher and gateway need no more)
    fetcher.Fetcher       the one fetcher per process: dequeue + ack batching, doorbell wait
    slots.Slots           runs what was fetched through `meetq._core.runner` (sync inline,
                          async/thread in `workers` worker coroutines)
    leases.Leases         the held-lease table and its renewer thread
    outcomes.Outcomes     ack / fail (retry or DLQ) / release / reply
    admin.QueueAdmin      stats and the DLQ, without a worker (CLI, dashboard, metrics)

State lives in Redis (schema in `meetq._redis.keys`, one Lua file per transition in
`meetq._redis.lua`). Connections come from `meetq._redis.links.Endpoint`: meetq's
`RespConnection` for the hot paths (publish, fetch, doorbell) when the server can be named
by a URL, the redis-py client (given, or built from the URL) for the rest. Transient
connection errors are retried with backoff and jitter; publishers and admin calls raise
`MeetqConnectionError` (cause attached) once `retry_budget` seconds are spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Unpack

import redis.asyncio

from meetq._core.lifecycle import Component
from meetq._core.runner import HandlerRunner, HandlerSpec
from meetq._redis.clients import warn_if_evicting
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Endpoint
from meetq._redis.retry import Outage
from meetq.errors import InvalidArgumentError
from meetq.queue.admin import DeadLetter, QueueAdmin
from meetq.queue.config import QueueConfig, QueueKnobs
from meetq.queue.fetcher import Fetcher
from meetq.queue.leases import Leases
from meetq.queue.message import Message
from meetq.queue.outcomes import Outcomes
from meetq.queue.publisher import Publisher
from meetq.queue.slots import Slots

log = logging.getLogger("meetq.queue")

Handler = Callable[[Message], Any]


async def _server_clock_offset(client: redis.asyncio.Redis) -> float:
    """Redis server time - local time.time(), seconds (`Message.expires_at` is server
    time). Best effort: an unreachable server leaves the local clock (0.0), which is the
    server's whenever both run on one machine."""
    try:
        async with asyncio.timeout(2.0):
            t0 = time.time()
            sec, usec = await client.time()
            t1 = time.time()
    except Exception as exc:
        log.debug("could not read the server clock: %r", exc)
        return 0.0
    return int(sec) + int(usec) / 1e6 - (t0 + t1) / 2


def check_queue_name(name: str) -> str:
    if not name or "{" in name or "}" in name:
        raise InvalidArgumentError("queue_name must be non-empty and free of braces")
    return name


class RedisMessageQueue(Component):
    """A reliable prioritized queue in Redis; see the module docstring for its parts.

    Knobs (keywords, or one `config=QueueConfig(...)`; keywords win): see `QueueConfig`.
    `publish`, `publish_batch`, `get_stats` and the DLQ calls work without `start()`.
    """

    _component_name = "queue"

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis,
        queue_name: str,
        workers: int | None = None,
        visibility_timeout: float | None = None,
        retry_backoff: float | None = None,
        *,
        config: QueueConfig | None = None,
        **knobs: Unpack[QueueKnobs],
    ) -> None:
        given = {
            "workers": workers,
            "visibility_timeout": visibility_timeout,
            "retry_backoff": retry_backoff,
        }
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        changes.update(knobs)
        self.config = cfg = (config or QueueConfig()).with_changes(**changes)
        self.queue_name = check_queue_name(queue_name)
        super().__init__(f"queue {queue_name!r}")
        self.workers = cfg.workers
        self.keys = QueueKeys(queue_name)
        self.endpoint = Endpoint(redis_or_url, cfg.resp_connection)
        self.publisher = Publisher(self.endpoint, queue_name, cfg)
        self.admin = QueueAdmin(self.endpoint, queue_name, cfg)
        self.codec = self.publisher.codec
        self.leases = Leases(self.endpoint, self.keys.all, cfg, queue_name)
        self._handlers: dict[str, HandlerSpec] = {}
        self._runner = HandlerRunner(cfg.workers)
        # the fetcher hands replies to the slots, which hand outcomes back to its acks
        outage = Outage(
            f"queue {queue_name!r} fetcher", cfg.retry_budget, self._degraded, self._recovered
        )
        self.fetcher = Fetcher(
            self.endpoint, self.keys, cfg, self.leases, self._deliver, queue_name, outage
        )
        self.outcomes = Outcomes(
            self.endpoint,
            self.keys.all,
            cfg,
            self.leases,
            self.fetcher.acks,
            self.fetcher.freed,
            queue_name,
            lambda: self.fetcher.hot_link,
        )
        self.slots = Slots(
            self._handlers, self._runner, self.codec, self.leases, self.outcomes, cfg, self.keys
        )
        self._deliver_to = self.slots.deliver

    def _deliver(self, reply: list[Any], granted: float) -> None:
        self._deliver_to(reply, granted)

    def register_handler(self, msg_type: str, handler: Handler, in_thread: bool = False) -> None:
        """handler(msg) -> dict | None, sync or async; `in_thread` runs a sync one off-loop
        (the rule: README, "Running handlers")."""
        self._handlers[msg_type] = HandlerSpec.of(handler, in_thread)

    # ------------------------------------------------------------------ life cycle

    async def _on_start(self) -> None:
        await warn_if_evicting(self.endpoint.client, f"queue {self.queue_name!r}")
        offset = await _server_clock_offset(self.endpoint.client)
        self.slots.clock_offset = self.outcomes.clock_offset = offset
        self.slots.stopping = self.outcomes.stopping = False
        self.fetcher.open()
        self.leases.start()
        for i in range(self.config.workers):
            self.supervise(f"worker-{i}", self.slots.worker)
        self.supervise("fetcher", self.fetcher.run)

    async def _on_stop(self) -> None:
        """Stop fetching, hand back unstarted messages, let running handlers finish within
        `stop_grace`, then release what is left. Every thread and connection opened here is
        closed even when a step fails; the first failure is raised after that."""
        cfg = self.config
        async with contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(self._close_connections)
            cleanup.push_async_callback(self.leases.stop)
            cleanup.callback(self._runner.close)
            self.fetcher.stop()
            self.slots.stopping = self.outcomes.stopping = True
            # the fetcher exits at its next safe point; cancelling it mid-call could lose a
            # dequeue reply (those leases would only come back after the visibility timeout)
            await self._supervisor.stop(cfg.block_timeout + 5.0, ["fetcher"])
            await self.outcomes.release(self.slots.take_unstarted())
            deadline = time.monotonic() + cfg.stop_grace
            workers = [f"worker-{i}" for i in range(cfg.workers)]
            await self._supervisor.stop(max(0.0, deadline - time.monotonic()), workers)
            await self.outcomes.settle(deadline - time.monotonic())
            await self.outcomes.flush_acks()
            leftovers = list(self.leases.held.items())
            await self.outcomes.release(leftovers)
            self.leases.clear()

    async def _close_connections(self) -> None:
        async with contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(self.endpoint.close)
            cleanup.push_async_callback(self.publisher.close)
            cleanup.push_async_callback(self.fetcher.close)

    async def _on_idle_stop(self) -> None:
        await self._close_connections()

    # ------------------------------------------------------------------ publishing

    async def publish(
        self, msg: Message, *, delay: float = 0.0, deliver_at: float | None = None
    ) -> str:
        """Stores the message and returns its id (see `Publisher.publish`)."""
        return await self.publisher.publish(msg, delay=delay, deliver_at=deliver_at)

    async def publish_batch(self, msgs: Iterable[Message]) -> list[str]:
        """Publishes many messages, one round trip per chunk (see `Publisher`)."""
        return await self.publisher.publish_batch(msgs)

    # ------------------------------------------------------------------ stats and DLQ

    async def get_stats(self) -> dict[str, Any]:
        stats = await self.admin.get_stats()
        # this process only (the totals are shared by every process)
        stats["local"] = {"processed": self.outcomes.processed, "failed": self.outcomes.failed}
        return stats

    async def dead_letter_count(self) -> int:
        return await self.admin.dead_letter_count()

    async def requeue_dead_letters(self, n: int = 100) -> int:
        """Moves the `n` oldest DLQ entries back to ready with their retry count reset."""
        return await self.admin.requeue_dead_letters(n)

    async def purge_dead_letters(self) -> int:
        return await self.admin.purge_dead_letters()

    async def dead_letters(self, count: int = 10, start: int = 0) -> list[DeadLetter]:
        """Peeks at DLQ entries, oldest first, without moving them."""
        return await self.admin.dead_letters(count, start)


__all__ = ["DeadLetter", "RedisMessageQueue"]
