"""Publishing Pub/Sub messages: one write per batch through a self-replacing `Link`, a
sequence number per channel for the subscribers' gap detection, and retries of connection
errors within a budget (`links.retrying`, the shared policy; a repeat after a lost reply
carries the same number, so subscribers drop it)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from meetq._redis.cluster import key_slot
from meetq._redis.links import Link
from meetq._redis.retry import TRANSIENT, retrying
from meetq._redis.router import ClusterRouter
from meetq.broadcast.message import BroadcastCodec, PubSubMessage

__all__ = ["TRANSIENT", "Publisher", "retrying"]


class Publisher:
    """The publishing half of `RedisPubSubQueue` (usable without starting it)."""

    def __init__(
        self,
        link: Link | ClusterRouter,
        codec: BroadcastCodec,
        instance: str,
        retry_budget: float,
        source: str,
        command: bytes = b"PUBLISH",
    ) -> None:
        self.link = link
        self.command = command  # SPUBLISH on Cluster: the channel stays on its shard
        self.codec = codec
        self.instance = instance
        self.retry_budget = retry_budget
        self.source = source
        self.seqs: dict[str, int] = {}
        self.published = 0

    def encode(self, channel: str, message: PubSubMessage) -> bytes:
        if not message.source and self.source:
            message.source = self.source
        if not message.timestamp:
            message.timestamp = time.time()
        seq = self.seqs.get(channel, 0) + 1
        data = self.codec.encode_pubsub(message, self.instance, seq)
        self.seqs[channel] = seq  # only once it encoded: a refused message leaves no hole
        message.publisher, message.seq = self.instance, seq
        return data

    async def _send(self, channel: bytes, commands: list[tuple[bytes, bytes, bytes]]) -> list[int]:
        link = self.link
        if isinstance(link, ClusterRouter):  # one channel: one slot, hashed once
            return await link.execute_many(commands, slot=key_slot(channel))
        return await link.execute_many(commands)

    async def publish(self, channel: str, message: PubSubMessage) -> int:
        data = self.encode(channel, message)
        reply = await retrying(
            lambda: self.link.execute(self.command, channel, data), self.retry_budget, "publish"
        )
        self.published += 1
        return int(reply)

    async def publish_batch(self, channel: str, messages: Iterable[PubSubMessage]) -> list[int]:
        source, instance, encode = self.source, self.instance, self.codec.encode_pubsub
        now = time.time()
        # the messages that share publisher, source and timestamp (most of a batch) are
        # spliced from bytes encoded once; the others take the general encoder
        splice = self.codec.splicer(instance, source, now)
        seq = self.seqs.get(channel, 0)
        pub, key = self.command, channel.encode()
        commands: list[tuple[bytes, bytes, bytes]] = []
        append = commands.append
        for m in messages:  # one sequence range for the batch: no dict per message
            seq += 1
            if splice is not None and not m.timestamp and not m.id and m.source in ("", source):
                m.source, m.timestamp = source, now
                append((pub, key, splice.encode(m.type, m.payload, seq)))
            else:
                if not m.source and source:
                    m.source = source
                if not m.timestamp:
                    m.timestamp = now
                append((pub, key, encode(m, instance, seq)))
            m.publisher, m.seq = instance, seq
        if not commands:
            return []
        self.seqs[channel] = seq  # all encoded: none refused, so no hole
        replies = await retrying(
            lambda: self._send(key, commands), self.retry_budget, "publish_batch"
        )
        if not all(type(r) is int for r in replies):
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        self.published += len(replies)
        return replies  # integers already (the receiver counts)
