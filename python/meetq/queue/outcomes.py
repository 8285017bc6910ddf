"""`Outcomes`: what happens to a message once its run ended: ack, fail (retry with backoff
or DLQ), release (hand back unstarted), reply.

Acks of messages without a reply are not sent here: they join the fetcher's `AckBatch`
and ride along with its next dequeue (one round trip applies the acks and fetches more). A
finished message stays in the lease table (its lease renewed) until its ack goes out.

Replies go only to a reply key of the message's own queue (checked when it
is delivered). The final outcome of a message with a reply is one script: `ack_reply`
(success: the reply, its expiry, the recorded outcome and the ack; the successes
that end while one call is in flight share the next, one RPUSH per reply list) or `fail` (the
move to the DLQ writes the failed/timeout reply and status the same way). A reply that
cannot be written is a failure like any other (retry, then the DLQ), never a silent ack.
Failures and replies are written by tasks of their own, on the endpoint's redis-py client,
retried until recorded (a worker must not drop outcomes), only giving up while stopping.
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
from meetq._redis.links import Endpoint, Link
from meetq._redis.retry import is_transient, retrying
from meetq.errors import MeetqConnectionError
from meetq.queue.config import QueueConfig
from meetq.queue.fetcher import AckBatch, dequeue_args
from meetq.queue.leases import Leases
from meetq.queue.message import Message

log = logging.getLogger("meetq.queue.outcomes")

T = TypeVar("T")

REPLY_CHUNK = 256
"""Successful runs with a reply acked per `ack_reply` call at most."""


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
        hot_link: Callable[[], Link | None] = lambda: None,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.leases = leases
        self.acks = acks
        self.queue_name = queue_name
        self._keys = keys
        self._kick = kick
        self._hot_link = hot_link
        self._what = f"queue {queue_name!r}"
        self._tasks: set[asyncio.Future[Any]] = set()
        self._replies: list[tuple[Message, str, str, bytes, str]] = []
        """Finished runs for the next `ack_reply` call: (message, token, status, result
        JSON, error): successes with a reply, and deliveries dropped unstarted."""
        self._writing = False
        """An `ack_reply` call is due or in flight (one at a time per process)."""
        self._due: asyncio.Handle | None = None
        """The end-of-turn callback that sends the next call."""
        self.stopping = False
        self.processed = 0
        """Runs of this process that succeeded (the shared totals are in Redis)."""
        self.failed = 0
        """Runs of this process that failed."""
        self.clock_offset = 0.0
        """Redis server time - local time.time(), seconds (processed_at is server time)."""

    @property
    def in_progress(self) -> int:
        """Outcomes still being written (failures, replies)."""
        return len(self._tasks)

    # ------------------------------------------------------------------ success

    def ok(self, msg: Message, token: str, encoded: Any) -> None:
        """A successful run; `encoded`: its result as JSON when the message has a reply."""
        if msg.reply_to:
            self._queue_reply((msg, token, "completed", encoded, ""))
            return
        self.processed += 1
        self.acks.add(msg.id, token)

    def drop(self, msg: Message, token: str, status: str, reason: str) -> None:
        """A delivery finished unstarted (`status` "timeout": past its `expires_at`): acked
        with its reply and status, like a success, never run and never retried."""
        self._queue_reply((msg, token, status, b"null", reason))

    def _queue_reply(self, member: tuple[Message, str, str, bytes, str]) -> None:
        self._replies.append(member)
        if not self._writing:
            # sent at the end of this loop turn: every run ending in it joins the call
            self._writing = True
            self._due = asyncio.get_running_loop().call_soon(self._write_next)

    def _write_next(self) -> None:
        """Sends the next `ack_reply` call, up to `REPLY_CHUNK` replies; runs made while it
        is in flight join the one after it. No task: on the fetch connection the call is
        a plain future whose callback settles it; anything but a clean reply (NOSCRIPT,
        a lost connection, no fetch connection) goes to `_write_slow`, which retries."""
        self._due = None
        replies = self._replies
        if not replies:
            self._writing = False
            return
        batch = replies[:REPLY_CHUNK]
        del replies[:REPLY_CHUNK]
        try:
            args = self._reply_args(batch)
        except Exception:  # a bug of ours: the batch comes back when its leases expire
            log.exception("queue %s: cannot encode %d replies", self.queue_name, len(batch))
            for msg, token, *_ in batch:
                self.leases.forget(msg.id, token)
            self._due = asyncio.get_running_loop().call_soon(self._write_next)
            return
        link = self._hot_link()
        if link is not None and link.is_open:
            try:
                sent = link.send_many([scripts.ack_reply.command(self._keys, args)])
            except Exception:
                log.debug("queue %s: reply call not sent on the fetch connection", exc_info=True)
            else:
                self._tasks.add(sent)
                sent.add_done_callback(lambda done: self._written(batch, args, done))
                return
        self._spawn(self._write_slow(batch, args))

    def _written(
        self,
        batch: list[tuple[Message, str, str, bytes, str]],
        args: list[Any],
        done: asyncio.Future[list[Any]],
    ) -> None:
        self._tasks.discard(done)
        if done.cancelled():
            self._writing = False  # settle() gave up on it (stopping)
            return
        res = None if done.exception() is not None else done.result()[0]
        if res is None or isinstance(res, Exception):
            self._spawn(self._write_slow(batch, args))
            return
        try:
            self._settle_replies(batch, res)
        finally:
            self._kick()
            self._write_next()

    def _reply_args(self, batch: list[tuple[Message, str, str, bytes, str]]) -> list[Any]:
        """The `ack_reply` ARGV; each member's reply object is encoded here (the script
        only joins them)."""
        dumps = orjson.dumps
        at = repr(time.time() + self.clock_offset)
        args: list[Any] = [self.config.result_ttl_ms, len(batch), at]
        # {"id", "status", "result", "error", "processed_at"}: the same object a
        # failure's script writes, assembled from parts (result is JSON already)
        ok_tail = b',"error":null,"processed_at":' + at.encode() + b"}"
        for msg, token, status, encoded, error in batch:
            head = b'{"id":' + dumps(msg.id) + b',"status":"' + status.encode()
            tail = (b',"error":' + dumps(error) + ok_tail[13:]) if error else ok_tail
            reply = head + b'","result":' + encoded + tail
            args += (msg.id, token, msg.reply_to, status, encoded, error, reply)
        return args

    async def _write_slow(
        self, batch: list[tuple[Message, str, str, bytes, str]], args: list[Any]
    ) -> None:
        """One `ack_reply` call through `Script.run` (EVAL after NOSCRIPT), retried until
        recorded; then the next call."""
        keys = self._keys
        try:
            res = await self._until_recorded(lambda: self._ack_reply(keys, args))
        except asyncio.CancelledError:
            self._writing = False
            raise
        except Exception as exc:
            log.warning("queue %s: could not ack %d runs (%r)", self.queue_name, len(batch), exc)
            for msg, token, *_ in batch:
                self.leases.forget(msg.id, token)  # its lease expires, it comes back
        else:
            self._settle_replies(batch, res)
        self._kick()
        self._write_next()

    async def _ack_reply(self, keys: list[str], args: list[Any]) -> Any:
        link = self._hot_link()
        if link is None or not link.is_open:
            return await scripts.ack_reply(self.endpoint.client, keys, args)
        return await scripts.ack_reply.run(link.execute, keys, args)

    def _settle_replies(
        self, batch: list[tuple[Message, str, str, bytes, str]], res: list[Any]
    ) -> None:
        for (msg, token, status, *_), code in zip(batch, res, strict=True):
            if code == 1 or code == -1:  # acked, or a stale lease (another delivery's now)
                self.processed += int(code == 1 and status == "completed")
                self.leases.forget(msg.id, token)
            else:
                err = code.decode(errors="replace") if isinstance(code, bytes) else str(code)
                self.fail(msg.id, token, msg, f"reply could not be written: {err}")

    # ------------------------------------------------------------------ failure

    def fail(
        self,
        mid: Any,
        token: str,
        msg: Message | None,
        reason: str,
        dead: bool = False,
        status: str = "failed",
    ) -> None:
        """A failed run (or an undeliverable entry when `dead`): retry after the backoff
        while retries are left, else the DLQ with `reason` (and, for a message with a
        reply, the reply with `status`: "failed" or "timeout")."""
        log.info("queue %s: message %s failed: %s", self.queue_name, mid, reason)
        self.failed += 1
        if dead or msg is None:
            max_retries, delay = -1, 0
        else:
            max_retries = msg.max_retries
            cfg = self.config
            delay_s = min(cfg.max_backoff, cfg.retry_backoff * (2 ** min(msg.retry_count, 30)))
            delay = int(delay_s * random.uniform(0.75, 1.25) * 1000)
        args = [mid, token, max_retries, delay, reason, *self.config.dlq_args]
        if msg is not None and msg.reply_to:
            args += [msg.reply_to, self.config.result_ttl_ms, status]
        self._spawn(self._fail(mid, token, args))

    async def _fail(self, mid: Any, token: str, args: list[Any]) -> None:
        client, keys = self.endpoint.client, self._keys
        try:
            await self._until_recorded(lambda: scripts.fail(client, keys, args))
        except Exception as exc:
            log.warning("queue %s: could not record failure of %r (%r)", self.queue_name, mid, exc)
        finally:
            self.leases.forget(mid, token)
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

    def hand_back(self, pairs: Sequence[tuple[Any, str]]) -> None:
        """`release`, in a task of its own (from the loop's synchronous paths)."""
        self._spawn(self.release(pairs))

    async def release(self, pairs: Sequence[tuple[Any, str]]) -> None:
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
        """Waits up to `timeout` for the outcome tasks (and the reply calls that follow
        them), then cancels and awaits the rest."""
        if self._due is not None:  # replies of this turn: sent now, not after we return
            self._due.cancel()
            self._write_next()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
        late = set(self._tasks)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("queue %s: an outcome task died", self.queue_name, exc_info=task.exception())


__all__ = ["Outcomes"]
