"""`Publisher`: stores messages in a queue without consuming it (the dispatcher and the
gateway publish; only workers fetch).

Every publish is idempotent on the message id. Ids made here (`new_id`: 96 random bits per
process plus a counter) cannot be stored already, so such a chunk goes as one MULTI/EXEC
of plain commands (HSET bodies, RPUSH ids, stats, doorbell) at a third of the publish
script's server time; ids the caller gave, and a chunk retried after an unknown outcome,
go through the script, which stores each id once. `publish_batch` stages chunks with the
native stager (pure twin) and writes each as soon as it is full, so Redis runs one chunk
while the next is being encoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError

from meetq._native import stage
from meetq._redis import scripts
from meetq._redis.cluster import key_slot
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Endpoint
from meetq._redis.retry import is_transient, retrying
from meetq.errors import MeetqConnectionError
from meetq.queue.config import QueueConfig
from meetq.queue.message import Codec, Message, new_id

log = logging.getLogger("meetq.queue.publisher")

BATCH_CHUNK = 250
"""Messages per publish call of `publish_batch` (Lua's stack bounds a script call to a
few thousand arguments; smaller chunks overlap encoding with Redis better)."""


def _empty_chunks() -> list[list[Any]]:
    """Publish script arguments, one list per kind (layout: `_pure/stage.py`): 0-3 given
    ids by priority, 4-7 ids made here, 8 delayed."""
    return [[b"0"], [b"1"], [b"2"], [b"3"], [b"0"], [b"1"], [b"2"], [b"3"], [b"d"]]


class Publisher:
    """Publishes into queue `queue_name`; `close()` closes its connection (and the client
    when it made it from a URL)."""

    def __init__(
        self,
        redis_or_url: str | redis.asyncio.Redis | Endpoint,
        queue_name: str,
        config: QueueConfig | None = None,
    ) -> None:
        self.config = config = config or QueueConfig()
        if isinstance(redis_or_url, Endpoint):
            self.endpoint, self._owns_endpoint = redis_or_url, False
        else:
            self.endpoint = Endpoint(redis_or_url, config.resp_connection)
            self._owns_endpoint = True
        self.queue_name = queue_name
        self.codec = Codec(config.serializer, config.max_message_size)
        keys = QueueKeys(queue_name)
        self._keys = keys.all
        self._msg_key, self._stats_key = keys.named("msg"), keys.named("stats")
        self._wake_key = keys.named("wake")
        self._ready_keys = [keys.ready(p) for p in range(4)]
        self._what = f"queue {queue_name!r}"
        # publishes answer in milliseconds; a shorter silence than the retry budget lets a
        # publisher on a half-open path retry on a fresh connection instead of failing
        self._link = self.endpoint.link(5.0, slot=key_slot(keys.prefix))

    async def close(self) -> None:
        try:
            await self._link.close()
        finally:
            if self._owns_endpoint:
                await self.endpoint.close()

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
        """Publishes many messages in one round trip per `BATCH_CHUNK` messages of one
        priority, pipelined on one connection.

        Ids are stamped on the messages first. An id repeated within the batch is stored
        once (the first). If one message fails to encode, the chunks already written are
        published, and publishing the batch again after fixing it stores each id once."""
        ids: list[str] = []
        sent: list[asyncio.Future[Any]] = []
        chunks = _empty_chunks()
        full = 1 + 2 * BATCH_CHUNK
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
        """Stores one chunk of staged messages (args: the publish script's). A fresh chunk
        goes as plain commands in one MULTI/EXEC; a retry after an unknown outcome goes
        through the script. (Cluster and other shared clients always use the script.)"""
        stored = await self._store(args, fresh)
        if self.config.wait_replicas:
            await self._wait_replicas()
        return stored

    async def _wait_replicas(self) -> None:
        """WAIT on the connection that stored the chunk: the publish returns only once
        `wait_replicas` replicas acknowledged every write made on it so far."""
        cfg = self.config
        got = int(await self._link.execute("WAIT", cfg.wait_replicas, int(cfg.wait_timeout * 1000)))
        if got < cfg.wait_replicas:
            raise MeetqConnectionError(
                f"{self._what}: stored on the master but acknowledged by {got} of "
                f"{cfg.wait_replicas} replicas within {cfg.wait_timeout}s (publishing the "
                "same message again is safe: it is stored once)"
            )

    async def _store(self, args: list[Any], fresh: bool) -> Any:
        link = self._link
        endpoint = self.endpoint
        if fresh and (endpoint.standard or (endpoint.routed and endpoint.url is not None)):
            ready_ids = args[1::2]
            try:
                return await link.transaction(
                    [
                        ("HSET", self._msg_key, *args[1:]),
                        ("RPUSH", self._ready_keys[int(args[0])], *ready_ids),
                        ("HINCRBY", self._stats_key, "published", len(ready_ids)),
                        ("RPUSH", self._wake_key, 1),
                        ("LTRIM", self._wake_key, 0, 0),
                    ]
                )
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, RedisError):
                    raise
                # transient, or e.g. garbage in `stats` or `wake`: the script stores each id
                # once and repairs the keys it owns (or raises a RedisCommandError saying why)
                log.debug("%s: publishing through the script after %r", self._what, exc)
        script, keys = scripts.publish, self._keys
        return await retrying(
            lambda: script.run(link.execute, keys, args),
            self.config.retry_budget,
            self._what,
        )


__all__ = ["BATCH_CHUNK", "Publisher"]
