"""`Outcomes`: what happens to a message once its run ended: ack, fail (retry with backoff
or DLQ), release (hand back unstarted), reply.

Acks are not sent here: they join the fetcher's `AckBatch` and ride along with its next
dequeue (one round trip applies the acks and fetches more). A finished message stays in
the lease table (its lease renewed) until its ack goes out. Failures and replies are
written by tasks of their own, on the endpoint's redis-py client; a failure is retried
until it is recorded (a worker must not drop outcomes), only giving up while stopping.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson

from meetq._core.backoff import backoff
from meetq._redis import scripts
from meetq._redis.links import Endpoint, is_transient, retrying
from meetq.errors import MeetqConnectionError
from meetq.queue.config import QueueConfig
from meetq.queue.fetcher import AckBatch, dequeue_args
from meetq.queue.leases import Leases
from meetq.queue.message import Message

log = logging.getLogger("meetq.queue.outcomes")

T = TypeVar("T")


class Outcomes:
    """Records the outcomes of one queue's runs in this process."""

    def __init__(
        self,
        endpoint: Endpoint,
        keys: list[str],
        config: QueueConfig,
        leases: Leases,
        acks: AckBatch,
        kick: Callable[[], None],
        queue_name: str,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.leases = leases
        self.acks = acks
        self.queue_name = queue_name
        self._keys = keys
        self._kick = kick
        self._what = f"queue {queue_name!r}"
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self.processed = 0
        """Runs of this process that succeeded (the shared totals are in Redis)."""
        self.failed = 0
        """Runs of this process that failed."""

    @property
    def in_progress(self) -> int:
        """Outcomes still being written (failures, replies)."""
        return len(self._tasks)

    # ------------------------------------------------------------------ success

    def ok(self, msg: Message, token: str, result: Any) -> None:
        self.processed += 1
        if msg.reply_to:
            self._spawn(self._reply_then_ack(msg, token, result))
            return
        self.acks.add(msg.id, token)

    async def _reply_then_ack(self, msg: Message, token: str, result: Any) -> None:
        try:
            await self.reply(msg, "completed", result, None)
        except Exception as exc:
            log.warning("queue %s: reply for %s failed (%r)", self.queue_name, msg.id, exc)
        self.acks.add(msg.id, token)

    async def reply(self, msg: Message, status: str, result: Any, error: str | None) -> None:
        """RPUSHes the outcome to `msg.reply_to` and sets its expiry."""
        try:
            body = orjson.dumps(
                {
                    "id": msg.id,
                    "status": status,
                    "result": result,
                    "error": error,
                    "processed_at": time.time(),
                }
            )
        except TypeError as exc:
            body = orjson.dumps(
                {
                    "id": msg.id,
                    "status": "failed",
                    "result": None,
                    "error": f"result is not serializable: {exc}",
                    "processed_at": time.time(),
                }
            )
        client = self.endpoint.client

        async def push() -> None:
            pipe = client.pipeline(transaction=False)
            pipe.rpush(msg.reply_to, body)
            pipe.expire(msg.reply_to, max(1, int(self.config.result_ttl)))
            await pipe.execute()

        await retrying(push, self.config.retry_budget, self._what)

    # ------------------------------------------------------------------ failure

    def fail(
        self, mid: str, token: str, msg: Message | None, reason: str, dead: bool = False
    ) -> None:
        """A failed run (or an undeliverable entry when `dead`): retry after the backoff
        while retries are left, else the DLQ with `reason`."""
        log.info("queue %s: message %s failed: %s", self.queue_name, mid, reason)
        self.failed += 1
        if dead or msg is None:
            max_retries, delay = -1, 0
        else:
            max_retries = msg.max_retries
            cfg = self.config
            delay_s = min(cfg.max_backoff, cfg.retry_backoff * (2 ** min(msg.retry_count, 30)))
            delay = int(delay_s * random.uniform(0.75, 1.25) * 1000)
        self._spawn(self._fail(mid, token, msg, reason, max_retries, delay))

    async def _fail(
        self, mid: str, token: str, msg: Message | None, reason: str, max_retries: int, delay: int
    ) -> None:
        args = [mid, token, max_retries, delay, reason, *self.config.dlq_args]
        client, keys = self.endpoint.client, self._keys
        try:
            outcome = await self._until_recorded(lambda: scripts.fail(client, keys, args))
            if outcome == 0 and msg is not None and msg.reply_to:
                await self.reply(msg, "failed", None, reason)
        except Exception as exc:
            log.warning("queue %s: could not record failure of %s (%r)", self.queue_name, mid, exc)
        finally:
            self.leases.held.pop(mid, None)
            self._kick()

    async def _until_recorded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Keeps trying until stop(): a worker must not drop outcomes."""
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                if not is_transient(exc) or (self.stopping and attempt > 20):
                    raise
                log.debug("queue %s: retrying after %r", self.queue_name, exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    # ------------------------------------------------------------------ hand back, flush

    async def release(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Hands leased (id, token) pairs back to the front of their ready lists."""
        if not pairs:
            return
        args = [x for pair in pairs for x in pair]
        client, keys = self.endpoint.client, self._keys
        try:
            await retrying(
                lambda: scripts.release(client, keys, args), self.config.retry_budget, self._what
            )
        except MeetqConnectionError as exc:
            log.warning(
                "queue %s: could not release %d leases (%r); they expire instead",
                self.queue_name,
                len(pairs),
                exc,
            )

    async def flush_acks(self) -> None:
        """Sends every pending ack now (stop)."""
        client, keys = self.endpoint.client, self._keys
        while self.acks:
            call = dequeue_args(self.config, 0, self.acks.take())
            try:
                await retrying(
                    lambda: scripts.dequeue(client, keys, call),  # noqa: B023
                    self.config.retry_budget,
                    self._what,
                )
            except MeetqConnectionError as exc:
                log.warning(
                    "queue %s: final acks lost (%r); redelivery follows", self.queue_name, exc
                )

    async def settle(self, timeout: float) -> None:
        """Waits up to `timeout` for the outcome tasks, then cancels and awaits the rest."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=max(0.0, timeout))
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["Outcomes"]
