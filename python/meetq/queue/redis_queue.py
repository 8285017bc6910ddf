"""`RedisMessageQueue`: the durable, prioritized, at-least-once queue between services.

State lives in Redis (schema in `_keys.py`, transitions in `_scripts.py`). One process runs
one fetcher task that feeds `workers` local handler slots:

- The fetcher calls the dequeue script, which in one round trip applies the acks of the
  handlers that finished since the last call, promotes due delayed messages and expired
  leases, pops up to `capacity - held` ids in strict priority order and leases them. While
  messages keep coming, the next dequeue is in flight while this batch's handlers run.
- Idle, it writes [BLPOP doorbell, EVALSHA dequeue] at once on its own connection: the
  dequeue runs inside Redis the moment a publisher rings, so a new message starts one
  round trip after its publish, never after a poll interval. The BLPOP is capped at
  `block_timeout` (a dead connection is noticed) and at the next due time (delays, retry
  backoff, leases). Acks made while idle are flushed at most `ack_delay` later.
- Sync handlers run inline in the fetcher (no task, the fastest path; their `timeout` is
  checked when they return, since a running sync call cannot be interrupted). Async and
  `in_thread=True` handlers run in `workers` worker coroutines that pop the local buffers
  (one per priority) highest first; an async handler's first step runs eagerly, and
  `asyncio.timeout` covers the rest. `workers` bounds concurrent async/thread handlers,
  `prefetch` the messages held beyond them.
- The hot paths (publish, fetch, doorbell) use meetq's `RespConnection` when the server
  can be named by a URL, else private redis-py clients; everything else goes through the
  redis-py client (given or built from the URL).
- Leases of everything held locally are extended by a thread with its own blocking
  connection, so a handler that hogs the event loop (even CPU-bound sync code) cannot let
  its lease expire.
- Failures retry through the delayed set with exponential backoff and jitter, then go to
  the DLQ with the error text, the time and the delivery count. Unknown types and
  undecodable entries go to the DLQ at once.
- Replies: a message with `reply_to` set gets its outcome RPUSHed to that list key as JSON
  `{"id", "status": "completed"|"failed", "result", "error", "processed_at"}`, and the key
  expires after `result_ttl` seconds. A waiter simply BLPOPs the key.
- Connection errors are retried with exponential backoff and jitter; publishers raise
  `MeetqConnectionError` (cause attached) once `retry_budget` seconds are spent. Publishing
  again after a lost reply is safe because publish deduplicates on the message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from meetq._core.backoff import backoff
from meetq._core.runner import SYNC, HandlerRunner, HandlerSpec, Outcome
from meetq._native import stage
from meetq._redis import scripts as _scripts
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Link, is_standard, url_of
from meetq.errors import MalformedMessageError, MeetqConnectionError, MessageTooLargeError
from meetq.priority import Priority
from meetq.queue.message import DEFAULT_MAX_SIZE, Codec, Format, Message, new_id

log = logging.getLogger("meetq.queue.redis_queue")

Handler = Callable[[Message], Any]
Pending = HandlerSpec | Coroutine[Any, Any, Outcome]
T = TypeVar("T")

_TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    MeetqConnectionError,
    ConnectionError,
    OSError,
    TimeoutError,
)
_ACK_CHUNK = 2000
_BATCH_CHUNK = 250
"""Messages per publish call of `publish_batch` (Lua's stack bounds a script call to a
few thousand arguments; smaller chunks overlap encoding with Redis better)."""
_INLINE_BUDGET = 0.02
"""Seconds of handler work between two chances for the fetcher to run."""


@dataclass(slots=True)
class DeadLetter:
    """One DLQ entry: the message (None when its bytes do not decode) and why it died."""

    id: str
    message: Message | None
    raw: bytes | None
    reason: str
    failed_at: float
    deliveries: int
    retries: int


def _empty_chunks() -> list[list[Any]]:
    """Publish script arguments, one list per kind (layout: `_stage.py`): 0-3 given ids by
    priority, 4-7 ids made here, 8 delayed."""
    return [[b"0"], [b"1"], [b"2"], [b"3"], [b"0"], [b"1"], [b"2"], [b"3"], [b"d"]]


class RedisMessageQueue:
    """A reliable prioritized queue in Redis; see the module docstring for the mechanics.

    Knobs beyond DESIGN.md: `prefetch` (messages held beyond `workers`, default
    max(64, 4 * workers)); `max_deliveries` (a lease that expires that often sends the
    message to the DLQ: poison messages that kill workers); `dead_letter_max` and
    `dead_letter_max_age` (the DLQ bounds, applied whenever a message dies); `stop_grace`;
    `result_ttl` (reply lists); `block_timeout` (longest doorbell wait); `retry_budget`
    (seconds a publisher retries before `MeetqConnectionError`); `serializer` and
    `max_message_size`; `resp_connection=False` keeps every path on redis-py; `ack_delay`.
    """

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis,
        queue_name: str,
        workers: int = 4,
        visibility_timeout: float = 30.0,
        retry_backoff: float = 1.0,
        *,
        prefetch: int | None = None,
        max_backoff: float = 300.0,
        max_deliveries: int = 10,
        dead_letter_max: int = 100_000,
        dead_letter_max_age: float = 7 * 86400.0,
        stop_grace: float = 10.0,
        result_ttl: float = 3600.0,
        block_timeout: float = 2.0,
        retry_budget: float = 10.0,
        serializer: Format = "json",
        max_message_size: int = DEFAULT_MAX_SIZE,
        resp_connection: bool = True,
        ack_delay: float = 0.02,
    ) -> None:
        if workers <= 0:
            raise ValueError("workers must be positive")
        if visibility_timeout <= 0:
            raise ValueError("visibility_timeout must be positive")
        if not queue_name or "{" in queue_name or "}" in queue_name:
            raise ValueError("queue_name must be non-empty and free of braces")
        self.queue_name = queue_name
        self.workers = workers
        self.visibility_timeout = visibility_timeout
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.max_deliveries = max_deliveries
        self.dead_letter_max = dead_letter_max
        self.dead_letter_max_age = dead_letter_max_age
        self.stop_grace = stop_grace
        self.result_ttl = result_ttl
        self.block_timeout = block_timeout
        self.retry_budget = retry_budget
        self.capacity = workers + (prefetch if prefetch is not None else max(64, 4 * workers))
        self._fetch_max = max(1, min(1000, self.capacity // 2))
        self._ack_delay = min(ack_delay, visibility_timeout / 10)
        self._ack_since = 0.0
        self._local_ok = 0
        self._local_failed = 0
        self._block_id: int | None = None
        self.codec = Codec(serializer, max_message_size)
        self.keys = QueueKeys(queue_name)
        self._keys = self.keys.all
        self._wake_key = self.keys.named("wake")
        # the plain-command publish path names these per call
        self._msg_key, self._stats_key = self.keys.named("msg"), self.keys.named("stats")
        self._ready_keys = [self.keys.ready(p) for p in range(4)]
        self._lease_ms = int(visibility_timeout * 1000)
        self._dlq_args = (dead_letter_max, int(dead_letter_max_age * 1000))

        if isinstance(redis_or_url, str):
            # socket_timeout: a server that stops answering fails the call instead of
            # hanging it (stats, DLQ, failures, replies run on this client)
            self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
                redis_or_url, socket_connect_timeout=5, socket_timeout=30.0, socket_keepalive=True
            )
            self._owns_client = True
            url: str | None = redis_or_url
        else:
            self._client = redis_or_url
            self._owns_client = False
            url = url_of(redis_or_url)
        self._standard = is_standard(self._client)
        self._url = url if resp_connection else None
        self._block_wait = block_timeout
        if not self._standard:
            # BLPOP runs on the caller's pool: stay inside its socket timeout
            pool = getattr(self._client, "connection_pool", None)
            limit = pool.connection_kwargs.get("socket_timeout") if pool else None
            if limit:
                self._block_wait = min(block_timeout, max(0.05, float(limit) / 2))
        # publishes answer in milliseconds; a shorter silence than the retry budget lets a
        # publisher on a half-open path retry on a fresh connection instead of failing
        self._pub = self._link(5.0)
        self._fetch: Link | None = None
        self._block: Link | None = None

        self._handlers: dict[str, HandlerSpec] = {}
        self._runner = HandlerRunner(workers)
        self._held: dict[str, str] = {}  # id -> lease token, for everything leased here
        # fetched, not yet started: one FIFO per priority, highest first, so a CRITICAL
        # message fetched behind a prefetched backlog still starts next
        # (the third item: the handler, or the rest of a run that already started)
        self._buffers: tuple[deque[tuple[Message, str, Pending]], ...] = tuple(
            deque() for _ in range(4)
        )
        self._work_fut: asyncio.Future[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._acks: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kick_fut: asyncio.Future[None] | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._sync: redis.Redis | None = None
        self._renewer: threading.Thread | None = None
        self._renew_stop = threading.Event()
        self._renew_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    def register_handler(self, msg_type: str, handler: Handler, in_thread: bool = False) -> None:
        """handler(msg) -> dict | None, sync or async; `in_thread` runs a sync one off-loop."""
        self._handlers[msg_type] = HandlerSpec.of(handler, in_thread)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopping = False
        # the fetch connection only runs scripts that answer in milliseconds: a few seconds
        # of silence mean a dead path, and the fetcher must not sit on it
        self._fetch = self._link(5.0)
        self._block = self._link(self.block_timeout + 5.0, single=True)
        self._sync = self._clone_sync() if self._standard else None
        self._renew_stop.clear()
        loop = asyncio.get_running_loop()
        if self._sync is not None:
            self._renewer = threading.Thread(
                target=self._renew_loop, name=f"meetq-lease-{self.queue_name}", daemon=True
            )
            self._renewer.start()
        else:
            # a client we cannot clone (Sentinel, custom pools): renew on the loop instead,
            # which a handler hogging the loop can delay
            self._renew_task = loop.create_task(self._renew_on_loop())
        self._workers = [loop.create_task(self._worker()) for _ in range(self.workers)]
        self._fetcher = loop.create_task(self._fetch_loop())

    async def stop(self) -> None:
        """Stop fetching, hand back unstarted messages, let running handlers finish within
        `stop_grace`, then release what is left; close only connections opened here."""
        if not self._started:
            await self._pub.close()
            if self._owns_client:
                await self._client.aclose()
            return
        self._stopping = True
        self._kick()
        if self._fetcher is not None:
            # The fetcher exits at its next safe point; cancelling it mid-call could lose a
            # dequeue reply (those leases would only come back after the visibility timeout).
            done, _ = await asyncio.wait({self._fetcher}, timeout=self.block_timeout + 5.0)
            if not done:
                self._fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetcher
            self._fetcher = None
        unstarted = [(msg.id, token) for b in self._buffers for msg, token, _ in b]
        for b in self._buffers:
            for _, _, pending in b:
                if not isinstance(pending, HandlerSpec):
                    pending.close()  # a run that began inline; its lease goes back
            b.clear()
        for mid, _ in unstarted:
            self._held.pop(mid, None)
        if self._work_fut is not None and not self._work_fut.done():
            self._work_fut.set_result(None)
        if unstarted:
            await self._release_tokens(unstarted)
        deadline = time.monotonic() + self.stop_grace
        for group in (self._workers, self._tasks):
            if group:
                _, late = await asyncio.wait(
                    set(group), timeout=max(0.0, deadline - time.monotonic())
                )
                for task in late:
                    task.cancel()
                if late:
                    await asyncio.wait(late)
        self._workers = []
        await self._flush_acks()
        leftovers = [(mid, tok) for mid, tok in self._held.items()]
        if leftovers:
            await self._release_tokens(leftovers)
        self._held.clear()
        self._renew_stop.set()
        if self._renew_task is not None:
            self._renew_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew_task
            self._renew_task = None
        if self._renewer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._renewer.join, 10)
            self._renewer = None
        self._runner.close()
        for link in (self._fetch, self._block, self._pub):
            if link is not None:
                await link.close()
        self._fetch = self._block = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        if self._owns_client:
            await self._client.aclose()
        self._started = False

    async def __aenter__(self) -> RedisMessageQueue:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ publishing

    def _stage(
        self, it: Iterator[Message], ids: list[str], chunks: list[list[Any]], now: float, full: int
    ) -> int:
        codec = self.codec
        index: int = stage(
            it, ids, chunks, now, codec.dumps, codec.max_size, new_id.prefix, new_id.count, full
        )
        return index

    async def publish(
        self, msg: Message, *, delay: float = 0.0, deliver_at: float | None = None
    ) -> str:
        """Stores the message and returns its id. An id already in the queue (ready, delayed,
        in flight or dead) is not stored again; once acked, the id may be used anew.
        `delay` (seconds) or `deliver_at` (epoch seconds) defer delivery."""
        now = time.time()
        if deliver_at is not None:
            msg.deliver_at = deliver_at
        elif delay > 0:
            msg.deliver_at = now + delay
        chunks = _empty_chunks()
        i = self._stage(iter((msg,)), [], chunks, now, 3)
        await self._store_chunk(chunks[i], 4 <= i < 8)
        return msg.id

    async def publish_batch(self, msgs: Iterable[Message]) -> list[str]:
        """Publishes many messages in one round trip: one script call per `_BATCH_CHUNK`
        messages of one priority, pipelined on one connection, each written as soon as it
        is full so Redis runs one chunk while the next is being encoded.

        Ids are stamped on the messages first. An id repeated within the batch is stored
        once (the first). If one message fails to encode, the chunks already written are
        published, and publishing the batch again after fixing it stores each id once."""
        ids: list[str] = []
        sent: list[asyncio.Future[Any]] = []
        chunks = _empty_chunks()
        full = 1 + 2 * _BATCH_CHUNK
        it = iter(msgs)
        now = time.time()
        try:
            while True:
                i = self._stage(it, ids, chunks, now, full)
                if i < 0:
                    break
                sent.append(asyncio.ensure_future(self._store_chunk(chunks[i], 4 <= i < 8)))
                chunks[i] = [chunks[i][0]]
                await asyncio.sleep(0)  # lets the chunk's task write it now
        except BaseException:
            await asyncio.gather(*sent, return_exceptions=True)  # settle what went out
            raise
        for i, chunk in enumerate(chunks):
            if len(chunk) > 1:
                sent.append(asyncio.ensure_future(self._store_chunk(chunk, 4 <= i < 8)))
        if sent:
            await asyncio.gather(*sent)
        return ids

    async def _store_chunk(self, args: list[Any], fresh: bool) -> Any:
        """Stores one chunk of staged messages (args: the publish script's). Ids made by
        `new_id` cannot be in Redis yet, so such a chunk skips the script's dedupe and goes
        as plain commands in one MULTI/EXEC, a third of the script's server time; a retry
        after an unknown outcome goes through the script, which stores each id once.
        (Cluster and other shared clients always use the script.)"""
        if fresh and self._standard:
            ready_ids = args[1::2]
            try:
                return await self._pub.transaction(
                    [
                        ("HSET", self._msg_key, *args[1:]),
                        ("RPUSH", self._ready_keys[int(args[0])], *ready_ids),
                        ("HINCRBY", self._stats_key, "published", len(ready_ids)),
                        ("RPUSH", self._wake_key, 1),
                        ("LTRIM", self._wake_key, 0, 0),
                    ]
                )
            except _TRANSIENT as exc:
                log.debug("queue %s: retrying after %r", self.queue_name, exc)
        script, link = _scripts.publish, self._pub
        return await self._retrying(lambda: script.run(link.execute, self._keys, args, link.load))

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Runs `call`, retrying transient connection errors within `retry_budget`."""
        deadline = time.monotonic() + self.retry_budget
        attempt = 0
        while True:
            try:
                return await call()
            except _TRANSIENT as exc:
                pause = backoff(attempt)
                attempt += 1
                if time.monotonic() + pause > deadline:
                    raise MeetqConnectionError(
                        f"redis unavailable for queue {self.queue_name!r}: {exc}"
                    ) from exc
                log.debug("queue %s: retrying after %r", self.queue_name, exc)
                await asyncio.sleep(pause)

    # ------------------------------------------------------------------ stats and DLQ

    async def get_stats(self) -> dict[str, Any]:
        r = await self._retrying(lambda: _scripts.stats(self._client, self._keys, []))
        raw = r[7]
        counters = {raw[i].decode(): int(raw[i + 1]) for i in range(0, len(raw), 2)}
        ready = [int(x) for x in r[:4]]
        return {
            "total_published": counters.get("published", 0),
            "total_processed": counters.get("processed", 0),
            "total_failed": counters.get("failed", 0),
            "total_retried": counters.get("retried", 0),
            "total_dead_letter": counters.get("dead_letter", 0),
            "queue_length": {
                "critical": ready[0],
                "high": ready[1],
                "normal": ready[2],
                "low": ready[3],
                "total": sum(ready),
            },
            "processing_count": int(r[4]),
            "delayed_count": int(r[5]),
            "dead_letter_count": int(r[6]),
            "workers": self.workers,
            # this process only (the totals above are shared by every process)
            "local": {"processed": self._local_ok, "failed": self._local_failed},
        }

    async def dead_letter_count(self) -> int:
        key = self.keys.named("dlq")
        n: int = await self._retrying(lambda: self._client.zcard(key))
        return n

    async def requeue_dead_letters(self, n: int = 100) -> int:
        """Moves the `n` oldest DLQ entries back to ready with their retry count reset."""
        if n <= 0:
            return 0
        moved: int = await self._retrying(
            lambda: _scripts.requeue_dlq(self._client, self._keys, [n])
        )
        return moved

    async def purge_dead_letters(self) -> int:
        removed: int = await self._retrying(
            lambda: _scripts.purge_dlq(self._client, self._keys, [])
        )
        return removed

    async def dead_letters(self, count: int = 10, start: int = 0) -> list[DeadLetter]:
        """Peeks at DLQ entries, oldest first, without moving them."""
        ids: list[bytes] = await self._retrying(
            lambda: self._client.zrange(self.keys.named("dlq"), start, start + count - 1)
        )
        if not ids:
            return []

        async def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.hmget(self.keys.named("msg"), ids)
            pipe.hmget(self.keys.named("dlqinfo"), ids)
            result: list[Any] = await pipe.execute()
            return result

        bodies, infos = await self._retrying(read)
        out = []
        for raw_id, body, info in zip(ids, bodies, infos, strict=True):
            meta: dict[str, Any] = {}
            with contextlib.suppress(Exception):
                meta = orjson.loads(info) if info else {}
            msg = None
            raw = body[1:] if body else None
            if raw is not None:
                with contextlib.suppress(MalformedMessageError, MessageTooLargeError):
                    msg = self.codec.decode(raw)
            out.append(
                DeadLetter(
                    id=raw_id.decode(),
                    message=msg,
                    raw=raw,
                    reason=str(meta.get("reason", "")),
                    failed_at=float(meta.get("time", 0.0)),
                    deliveries=int(meta.get("deliveries", 0)),
                    retries=int(meta.get("retries", 0)),
                )
            )
        return out

    # ------------------------------------------------------------------ fetching

    def _kick(self, _: object = None) -> None:
        fut = self._kick_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _take_acks(self) -> list[str]:
        """The next chunk of acks to send. A finished message stays in `held` (its lease
        renewed) until its ack goes out, so a slow flush cannot let the lease lapse."""
        acks = self._acks
        if len(acks) > 2 * _ACK_CHUNK:
            self._acks = acks[2 * _ACK_CHUNK :]
            acks = acks[: 2 * _ACK_CHUNK]
        else:
            self._acks = []
        held = self._held
        for i in range(0, len(acks), 2):
            if held.get(acks[i]) == acks[i + 1]:
                del held[acks[i]]
        return acks

    def _untake_acks(self, acks: list[str]) -> None:
        """Puts acks whose call failed back in line (and their leases under renewal)."""
        self._acks = acks + self._acks
        for i in range(0, len(acks), 2):
            self._held.setdefault(acks[i], acks[i + 1])

    async def _fetch_loop(self) -> None:
        """The one fetcher of this process.

        Busy: dequeue (with the pending acks) while messages keep coming; the next dequeue
        is already in flight while this batch's handlers run. Idle: one write of
        [BLPOP doorbell, EVALSHA dequeue] on the doorbell connection, so the dequeue runs
        inside Redis the moment a publisher rings, with no extra round trip; acks made
        meanwhile are flushed at most `ack_delay` later on the fetch connection. Both are
        plain futures of the connections (no task, no timer per call: the connections'
        reply timeouts catch a silent server), and an idle wait is one future that the
        doorbell reply, the first ack's timer or stop() completes.
        """
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[list[Any]] | None = None
        command: tuple[Any, ...] = ()
        pair: asyncio.Future[list[Any]] | None = None
        pair_n = 0
        sent_acks: list[str] = []
        asked = 0
        attempt = 0
        drained = False
        wait_ms = -1
        script = _scripts.dequeue
        fetch, block = self._fetch, self._block
        assert fetch is not None and block is not None

        def ask(n: int) -> asyncio.Future[list[Any]]:
            nonlocal sent_acks, asked, command
            sent_acks = self._take_acks()
            asked = n
            command = script.command(self._keys, self._dequeue_args(n, sent_acks))
            return fetch.send_many([command])

        try:
            while True:
                if pending is None:
                    if self._stopping:
                        break
                    room = min(self.capacity - len(self._held), self._fetch_max)
                    acks = self._acks
                    acks_due = bool(acks) and (
                        not drained
                        or len(acks) >= 2 * self._fetch_max
                        or time.monotonic() - self._ack_since >= self._ack_delay
                    )
                    if acks_due or (room > 0 and not drained):
                        pending = ask(0 if pair is not None or room < 0 else room)
                    else:
                        # Idle: the pair waits for the doorbell; wake early for acks.
                        if pair is None and room > 0:
                            pair_n = room
                            pair = self._ring_and_dequeue(block, room, wait_ms)
                            pair.add_done_callback(self._kick)
                        timer = None
                        if self._acks:
                            due = self._ack_since + self._ack_delay - time.monotonic()
                            timer = loop.call_later(max(0.0, due), self._kick)
                        if pair is None or not pair.done():
                            self._kick_fut = fut = loop.create_future()
                            await fut
                            self._kick_fut = None
                        if timer is not None:
                            timer.cancel()
                        if pair is not None and pair.done():
                            finished, pair = pair, None
                            try:
                                rung, reply = finished.result()
                                if isinstance(reply, NoScriptError):
                                    await block.load(script.source)
                                    drained = False  # the dequeue did not run: fetch now
                                    continue
                                if isinstance(reply, Exception):
                                    raise reply
                            except Exception as exc:
                                log.warning("queue %s: wait failed (%r)", self.queue_name, exc)
                                await asyncio.sleep(backoff(attempt))
                                attempt += 1
                                drained = False  # a ring may have been lost with it
                                continue
                            attempt = 0
                            got = (len(reply) - 3) // 5
                            wait_ms = reply[1]
                            drained = not (reply[2] or (got and got >= pair_n))
                            if got:
                                self._deliver(reply)
                            if isinstance(rung, Exception):
                                # e.g. garbage in the doorbell key: do not spin on it
                                log.warning("queue %s: doorbell failed (%r)", self.queue_name, rung)
                                await asyncio.sleep(min(1.0, self._block_wait))
                        continue
                try:
                    reply = (await pending)[0]
                    if isinstance(reply, NoScriptError):
                        await fetch.load(script.source)
                        pending = fetch.send_many([command])  # it did not run: same call
                        continue
                    if isinstance(reply, Exception):
                        raise reply
                except asyncio.CancelledError:
                    self._untake_acks(sent_acks)
                    raise
                except Exception as exc:
                    self._untake_acks(sent_acks)
                    pending = None
                    log.warning("queue %s: fetch failed (%r); retrying", self.queue_name, exc)
                    await asyncio.sleep(backoff(attempt))
                    attempt += 1
                    continue
                pending = None
                attempt = 0
                got = (len(reply) - 3) // 5
                wait_ms = reply[1]
                more = bool(reply[2] or (got and got >= asked))
                if asked or more:
                    drained = not more
                if more and not self._stopping:
                    room = min(self.capacity - len(self._held) - got, self._fetch_max)
                    if room > 0:
                        pending = ask(room)
                if got:
                    self._deliver(reply)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
                self._untake_acks(sent_acks)
            if pair is not None:
                await self._collect_pair(pair)

    def _dequeue_args(self, n: int, acks: list[str]) -> list[Any]:
        """The dequeue script's ARGV: fetch up to `n`, apply the (id, token) pairs `acks`."""
        return [n, self._lease_ms, self.max_deliveries, *self._dlq_args, len(acks) // 2, *acks]

    def _ring_and_dequeue(self, block: Link, n: int, wait_ms: int) -> asyncio.Future[list[Any]]:
        """[BLPOP doorbell, EVALSHA dequeue] in one write: the future of both replies."""
        timeout = self._block_wait if wait_ms < 0 else min(self._block_wait, wait_ms / 1000)
        commands = [
            ("BLPOP", self._wake_key, round(max(timeout, 0.001), 3)),
            _scripts.dequeue.command(self._keys, self._dequeue_args(n, [])),
        ]
        if block.is_open and self._block_id is not None:
            return block.send_many(commands)
        return asyncio.ensure_future(self._open_then_send(block, commands))

    async def _open_then_send(self, block: Link, commands: list[tuple[Any, ...]]) -> list[Any]:
        # the connection's id lets stop() unblock the wait (CLIENT UNBLOCK)
        self._block_id = await block.client_id()
        return await block.execute_many(commands)

    async def _collect_pair(self, pair: asyncio.Future[list[Any]]) -> None:
        """On stop: unblocks the doorbell wait so its dequeue runs now, and keeps what it
        leased (stop() hands it back) instead of leaving it to the visibility timeout."""
        run: Callable[..., Awaitable[Any]] = self._client.execute_command
        deadline = time.monotonic() + self.block_timeout + 1.0
        while not pair.done() and time.monotonic() < deadline:
            # repeated: the BLPOP may not have reached Redis yet when stop() begins
            if self._block_id is not None:
                with contextlib.suppress(Exception):
                    await run("CLIENT", "UNBLOCK", self._block_id)
            await asyncio.wait({pair}, timeout=0.05)
        if not pair.done():
            pair.cancel()
        try:
            reply = (await pair)[1]
        except BaseException:
            return
        if isinstance(reply, list) and len(reply) > 3:
            self._deliver(reply)

    def _deliver(self, reply: list[Any]) -> None:
        """Decodes a dequeue reply; runs sync handlers inline for up to `_INLINE_BUDGET`
        seconds and queues the rest for the worker coroutines, so the fetcher soon reads
        the next reply (whose leases the renewer cannot know before). Everything is only
        queued once stop() has begun."""
        held = self._held
        handlers = self._handlers
        decode = self.codec.decode
        buffers = self._buffers
        inline = not self._stopping and not any(buffers)
        deadline = time.monotonic() + _INLINE_BUDGET
        queued = False
        for i in range(3, len(reply), 5):
            mid = reply[i].decode()
            token = reply[i + 1].decode()
            held[mid] = token
            try:
                msg = decode(reply[i + 4])
            except (MalformedMessageError, MessageTooLargeError) as exc:
                self._finish_failed(mid, token, None, f"malformed message: {exc}", dead=True)
                continue
            msg.id = mid
            msg.deliveries = reply[i + 2]
            msg.retry_count = reply[i + 3]
            spec = handlers.get(msg.type)
            if spec is None:
                self._finish_failed(
                    mid, token, msg, f"no handler for message type {msg.type!r}", dead=True
                )
            elif spec.kind == SYNC and inline and time.monotonic() < deadline:
                self._run_inline(spec, msg, token)
            else:
                buffers[3 - msg.priority].append((msg, token, spec))
                queued = True
        if queued:
            fut = self._work_fut
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _run_inline(self, spec: HandlerSpec, msg: Message, token: str) -> None:
        step = self._runner.start(spec, msg, msg.timeout)
        if isinstance(step, Outcome):
            self._settle(msg, token, step)
            return
        # a callable that is async without looking so (partial, __call__): a worker
        # finishes the run it started
        self._buffers[3 - msg.priority].append((msg, token, step))
        fut = self._work_fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _settle(self, msg: Message, token: str, outcome: Outcome) -> None:
        if outcome.ok:
            self._finish_ok(msg, token, outcome.result)
        else:
            self._finish_failed(msg.id, token, msg, outcome.error or outcome.status)

    async def _worker(self) -> None:
        """One handler slot: runs queued async/thread handlers one after another. A handler
        that finishes without suspending costs no event-loop round."""
        loop = asyncio.get_running_loop()
        buffers = self._buffers
        start = self._runner.start
        turn_ends = time.monotonic() + _INLINE_BUDGET
        while not self._stopping:
            if time.monotonic() > turn_ends:
                # handlers that never suspend would otherwise keep the loop (and the
                # fetcher) waiting for the whole backlog
                await asyncio.sleep(0)
                turn_ends = time.monotonic() + _INLINE_BUDGET
            for buffer in buffers:
                if buffer:
                    msg, token, pending = buffer.popleft()
                    break
            else:
                fut = self._work_fut
                if fut is None or fut.done():
                    fut = self._work_fut = loop.create_future()
                await fut
                turn_ends = time.monotonic() + _INLINE_BUDGET
                continue
            step = start(pending, msg, msg.timeout) if isinstance(pending, HandlerSpec) else pending
            # a cancellation of this task (stop() past its grace) propagates: the lease is
            # released, not failed
            outcome = step if isinstance(step, Outcome) else await step
            self._settle(msg, token, outcome)
            if outcome.straggler is not None:
                # a timed-out thread still runs: this slot stays taken until it returns
                await outcome.settled()

    # ------------------------------------------------------------------ outcomes

    def _finish_ok(self, msg: Message, token: str, result: Any) -> None:
        self._local_ok += 1
        if msg.reply_to:
            self._spawn(self._reply_then_ack(msg, token, result))
            return
        self._add_ack(msg.id, token)

    def _add_ack(self, mid: str, token: str) -> None:
        acks = self._acks
        if not acks:
            self._ack_since = time.monotonic()
        acks += (mid, token)
        if len(acks) == 2 or len(acks) >= 2 * self._fetch_max:
            # the first ack arms the fetcher's flush timer (or goes out at once when busy);
            # later ones ride along with it
            self._kick()

    async def _reply_then_ack(self, msg: Message, token: str, result: Any) -> None:
        try:
            await self._reply(msg, "completed", result, None)
        except Exception as exc:
            log.warning("queue %s: reply for %s failed (%r)", self.queue_name, msg.id, exc)
        self._add_ack(msg.id, token)

    async def _reply(self, msg: Message, status: str, result: Any, error: str | None) -> None:
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

        async def push() -> None:
            pipe = self._client.pipeline(transaction=False)
            pipe.rpush(msg.reply_to, body)
            pipe.expire(msg.reply_to, max(1, int(self.result_ttl)))
            await pipe.execute()

        await self._retrying(push)

    def _finish_failed(
        self, mid: str, token: str, msg: Message | None, reason: str, dead: bool = False
    ) -> None:
        log.info("queue %s: message %s failed: %s", self.queue_name, mid, reason)
        self._local_failed += 1
        if dead or msg is None:
            max_retries, delay = -1, 0
        else:
            max_retries = msg.max_retries
            delay = min(self.max_backoff, self.retry_backoff * (2 ** min(msg.retry_count, 30)))
            delay = int(delay * random.uniform(0.75, 1.25) * 1000)
        self._spawn(self._fail(mid, token, msg, reason, max_retries, delay))

    async def _fail(
        self, mid: str, token: str, msg: Message | None, reason: str, max_retries: int, delay: int
    ) -> None:
        args = [mid, token, max_retries, delay, reason, *self._dlq_args]
        try:
            outcome = await self._retrying_forever(
                lambda: _scripts.fail(self._client, self._keys, args)
            )
            if outcome == 0 and msg is not None and msg.reply_to:
                await self._reply(msg, "failed", None, reason)
        except Exception as exc:
            log.warning("queue %s: could not record failure of %s (%r)", self.queue_name, mid, exc)
        finally:
            self._held.pop(mid, None)
            self._kick()

    async def _retrying_forever(self, call: Callable[[], Awaitable[T]]) -> T:
        """Like `_retrying`, but keeps trying until stop(): a worker must not drop outcomes."""
        attempt = 0
        while True:
            try:
                return await call()
            except _TRANSIENT as exc:
                if self._stopping and attempt > 20:
                    raise
                log.debug("queue %s: retrying after %r", self.queue_name, exc)
                await asyncio.sleep(backoff(attempt))
                attempt += 1

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)

    async def _flush_acks(self) -> None:
        while self._acks:
            call = self._dequeue_args(0, self._take_acks())
            try:
                await self._retrying(lambda: _scripts.dequeue(self._client, self._keys, call))  # noqa: B023
            except MeetqConnectionError as exc:
                log.warning(
                    "queue %s: final acks lost (%r); redelivery follows", self.queue_name, exc
                )

    async def _release_tokens(self, pairs: Sequence[tuple[str, str]]) -> None:
        args = [x for pair in pairs for x in pair]
        try:
            await self._retrying(lambda: _scripts.release(self._client, self._keys, args))
        except MeetqConnectionError as exc:
            log.warning(
                "queue %s: could not release %d leases (%r); they expire instead",
                self.queue_name,
                len(pairs),
                exc,
            )

    # ------------------------------------------------------------------ lease renewal

    def _renew_loop(self) -> None:
        """Thread: extends the leases of everything held here every third of the lease."""
        interval = max(0.05, self.visibility_timeout / 3)
        while not self._renew_stop.wait(interval):
            held = list(self._held.copy().items())
            sync = self._sync
            if not held or sync is None:
                continue
            for start in range(0, len(held), _ACK_CHUNK):
                args: list[Any] = [self._lease_ms]
                for pair in held[start : start + _ACK_CHUNK]:
                    args.extend(pair)
                try:
                    _scripts.extend.call_sync(sync, self._keys, args)
                except Exception as exc:
                    log.warning("queue %s: lease renewal failed (%r)", self.queue_name, exc)
                    break

    async def _renew_on_loop(self) -> None:
        interval = max(0.05, self.visibility_timeout / 3)
        while not self._stopping:
            await asyncio.sleep(interval)  # a period, not synchronization
            held = list(self._held.items())
            for start in range(0, len(held), _ACK_CHUNK):
                args: list[Any] = [self._lease_ms]
                for pair in held[start : start + _ACK_CHUNK]:
                    args.extend(pair)
                try:
                    await _scripts.extend(self._client, self._keys, args)
                except Exception as exc:
                    log.warning("queue %s: lease renewal failed (%r)", self.queue_name, exc)
                    break

    # ------------------------------------------------------------------ connections

    def _conn_kwargs(self) -> tuple[type[Any], dict[str, Any]]:
        pool = self._client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        for drop in ("retry", "redis_connect_func", "parser_class", "connection_pool"):
            kwargs.pop(drop, None)
        return pool.connection_class, kwargs

    def _link(self, timeout: float, single: bool = False) -> Link:
        if not self._standard:
            return Link(None, lambda: self._client, timeout, owned=False)
        return Link(self._url, lambda: self._clone_async(timeout, 1 if single else 8), timeout)

    def _clone_async(self, socket_timeout: float, connections: int) -> redis.asyncio.Redis:
        cls, kwargs = self._conn_kwargs()
        kwargs["socket_timeout"] = socket_timeout
        pool = redis.asyncio.ConnectionPool(
            connection_class=cls, max_connections=connections, **kwargs
        )
        return redis.asyncio.Redis(connection_pool=pool)

    def _clone_sync(self) -> redis.Redis:
        cls, kwargs = self._conn_kwargs()
        sync_cls: type[Any] = redis.connection.Connection
        if issubclass(cls, redis.asyncio.connection.SSLConnection):
            sync_cls = redis.connection.SSLConnection
        elif issubclass(cls, redis.asyncio.connection.UnixDomainSocketConnection):
            sync_cls = redis.connection.UnixDomainSocketConnection
        kwargs["socket_timeout"] = max(5.0, self.visibility_timeout / 3)
        kwargs.setdefault("socket_connect_timeout", 5.0)
        pool = redis.ConnectionPool(connection_class=sync_cls, max_connections=2, **kwargs)
        return redis.Redis(connection_pool=pool)


__all__ = ["DeadLetter", "Priority", "RedisMessageQueue"]
