"""A dispatcher's connections per hash slot, so the same dispatcher runs on Redis Cluster.

Every key of one service queue carries the queue's hash tag (`meetq:{Q}:...`): the
queue's publish transition, the done hashes its tasks' outcomes go to and this process's reply list
there all live in ONE slot, which is why the worker's final script can write the result,
the status, the reply and the ack atomically. A dispatcher, though, talks to several
queues, i.e. several slots, and on a Cluster commands of different slots can share
neither a MULTI nor a BLPOP. So on a Cluster it keeps, per slot it uses:

- one command link (`ShardLinks.for_slot`): the MULTI that publishes that slot's tasks,
  its timeout and cancel scripts;
- one reply reader with its own blocking connection (`ShardReaders`), BLPOPing the reply
  list of that slot's queue(s).

That is O(queues) connections and keys per process, never per task. On a single server
(or behind Sentinel) there is one slot group, `None`: one link and one reader for every
queue, exactly as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from meetq._redis.cluster import key_slot
from meetq._redis.keys import QueueKeys
from meetq._redis.links import Endpoint, Link
from meetq.dispatch.replies import ReplyReader
from meetq.dispatch.types import queue_of

Slot = int | None
"""A cluster hash slot, or None on a single server (one group for every queue)."""

KEYLESS_SLOT = 0
"""Where a Cluster dispatcher sends keyless commands (TIME): the master of slot 0."""


def is_cluster(endpoint: Endpoint) -> bool:
    """Whether `endpoint` is a Redis Cluster our own connections route per slot."""
    return endpoint.url is not None and endpoint.url.startswith("redis+cluster://")


class ShardLinks:
    """The dispatcher's command links: one on a single server, one per slot on a Cluster."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.clustered = is_cluster(endpoint)
        self._timeout = timeout
        self._links: dict[Slot, Link] = {}
        self._slots: dict[str, Slot] = {}

    def slot_of(self, queue: str) -> Slot:
        """The slot group of `queue` (None on a single server)."""
        slot = self._slots.get(queue, -1)
        if slot == -1:
            slot = self._slots[queue] = (
                key_slot(QueueKeys(queue).prefix) if self.clustered else None
            )
        return slot

    def slot_of_task(self, task_id: str) -> Slot:
        return self.slot_of(queue_of(task_id) or "")

    def for_slot(self, slot: Slot) -> Link:
        link = self._links.get(slot)
        if link is None:
            link = self._links[slot] = self.endpoint.link(self._timeout, slot=slot)
        return link

    def for_queue(self, queue: str) -> Link:
        return self.for_slot(self.slot_of(queue))

    def for_task(self, task_id: str) -> Link:
        """The link of the slot that holds `task_id` (its queue's keys)."""
        return self.for_slot(self.slot_of_task(task_id))

    @property
    def keyless(self) -> Link:
        """A link for commands without keys (TIME)."""
        return self.for_slot(KEYLESS_SLOT if self.clustered else None)

    async def close(self) -> None:
        for link in list(self._links.values()):
            await link.close()


class ShardReaders:
    """One `ReplyReader` per slot group, each on its own blocking connection; the same calls
    as one reader (`add_key`, `start`, `stop`, `rounds`)."""

    def __init__(
        self,
        links: ShardLinks,
        on_replies: Callable[[list[bytes]], None],
        block_timeout: float,
    ) -> None:
        self._links = links
        self._on_replies = on_replies
        self.block_timeout = links.endpoint.longest_block(block_timeout)
        self._readers: dict[Slot, tuple[ReplyReader, Link]] = {}
        self._started = False

    @property
    def rounds(self) -> int:
        """Round trips made by all readers (a benchmark reads it)."""
        return sum(reader.rounds for reader, _ in self._readers.values())

    def add_key(self, key: str, slot: Slot) -> None:
        """Reads reply list `key` (of slot group `slot`) from now on."""
        entry = self._readers.get(slot)
        if entry is None:
            link = self._links.endpoint.link(self.block_timeout + 5.0, single=True, slot=slot)
            # CLIENT UNBLOCK goes over the slot's command link: the same master
            reader = ReplyReader(
                link, self._links.for_slot(slot), self._on_replies, self.block_timeout
            )
            entry = self._readers[slot] = (reader, link)
            if self._started:
                reader.start()
        entry[0].add_key(key)

    def start(self) -> None:
        self._started = True
        for reader, _ in self._readers.values():
            reader.start()

    async def stop(self) -> None:
        self._started = False
        readers = [reader for reader, _ in self._readers.values()]
        await asyncio.gather(*(reader.stop() for reader in readers))

    async def close(self) -> None:
        for _, link in self._readers.values():
            await link.close()


__all__ = ["KEYLESS_SLOT", "ShardLinks", "ShardReaders", "Slot", "is_cluster"]
