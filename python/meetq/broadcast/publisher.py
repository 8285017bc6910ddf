"""Publishing Pub/Sub messages: one write per batch through a self-replacing `Link`, a
sequence number per channel for the subscribers' gap detection, and retries of connection
errors within a budget (a repeat after a lost reply carries the same number, so
subscribers drop it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from meetq._core.backoff import backoff
from meetq._redis.links import Link
from meetq.broadcast.message import BroadcastCodec, PubSubMessage
from meetq.errors import MeetqConnectionError

TRANSIENT = (
    MeetqConnectionError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    TimeoutError,
)
"""Errors worth another try on a fresh connection."""


async def retrying(call: Callable[[], Coroutine[Any, Any, Any]], budget: float, what: str) -> Any:
    """Runs `call` again after connection errors, with backoff, for `budget` seconds; then
    raises `MeetqConnectionError` with the last error as its cause."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    attempt = 0
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            if loop.time() >= deadline:
                raise MeetqConnectionError(f"{what} failed: {exc!r}") from exc
            await asyncio.sleep(backoff(attempt))
            attempt += 1


class Publisher:
    """The publishing half of `RedisPubSubQueue` (usable without starting it)."""

    def __init__(
        self, link: Link, codec: BroadcastCodec, instance: str, retry_budget: float, source: str
    ) -> None:
        self.link = link
        self.codec = codec
        self.instance = instance
        self.retry_budget = retry_budget
        self.source = source
        self.seqs: dict[str, int] = {}
        self.published = 0

    def encode(self, channel: str, message: PubSubMessage) -> bytes:
        if not message.source and self.source:
            message.source = self.source
        message.stamp()
        seq = self.seqs.get(channel, 0) + 1
        data = self.codec.encode_pubsub(message, self.instance, seq)
        self.seqs[channel] = seq  # only once it encoded: a refused message leaves no hole
        message.publisher, message.seq = self.instance, seq
        return data

    async def publish(self, channel: str, message: PubSubMessage) -> int:
        data = self.encode(channel, message)
        reply = await retrying(
            lambda: self.link.execute("PUBLISH", channel, data), self.retry_budget, "publish"
        )
        self.published += 1
        return int(reply)

    async def publish_batch(self, channel: str, messages: Iterable[PubSubMessage]) -> list[int]:
        commands = [(b"PUBLISH", channel, self.encode(channel, m)) for m in messages]
        if not commands:
            return []
        replies = await retrying(
            lambda: self.link.execute_many(commands), self.retry_budget, "publish_batch"
        )
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        self.published += len(replies)
        return [int(r) for r in replies]
