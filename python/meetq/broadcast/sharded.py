"""`ShardedSubscriber`: a `RedisPubSubQueue`'s subscription on Redis Cluster.

Classic PUBLISH on a cluster is copied to every node over the cluster bus, so its cost
grows with the cluster; sharded Pub/Sub (SPUBLISH/SSUBSCRIBE, Redis 7) keeps a channel on
the shard that owns its slot (the channel name hashes like a key, hash tags included). So
on Cluster meetq publishes with SPUBLISH and subscribes with SSUBSCRIBE: one subscription
connection per master (all of them, so a channel subscribed later always has one), each
channel subscribed on the master of its slot, one SSUBSCRIBE per slot (Redis refuses a
command whose channels span slots).

To its owner the group is ONE subscription connection (same calls as
`SubscriberConnection`): confirmed when every member is, held and released together, and
lost as a whole when any member is lost (its socket closes, a probe is not echoed, the
server drops a channel because its slot moved, or refuses a subscription). The owner then
reconnects everything from a fresh slot map, which finds a promoted replica; the other
shards' members are closed first so nothing is delivered twice. Each member has its own
probe channel, in a slot of its shard (`keys.pubsub_shard_probe_channel`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from functools import cache

from meetq._redis.cluster import ClusterSettings, _owner, key_slot, slot_map
from meetq._redis.connection import Arg
from meetq._redis.keys import pubsub_shard_probe_channel
from meetq.broadcast.subscriber import Sink, SubscriberConnection
from meetq.errors import InvalidArgumentError, MeetqConnectionError

_SHARDED = {b"SUBSCRIBE": b"SSUBSCRIBE", b"UNSUBSCRIBE": b"SUNSUBSCRIBE"}

Addr = tuple[str, int]


@cache
def slot_tag(slot: int) -> str:
    """The shortest decimal hash tag that lands in `slot` (a few thousand CRCs, once)."""
    i = 0
    while key_slot(str(i)) != slot:
        i += 1
    return str(i)


class ShardedSubscriber:
    """The subscription connections of one bus on a cluster; see the module docstring."""

    def __init__(
        self,
        members: dict[Addr, SubscriberConnection],
        ranges: list[tuple[int, int, str, int]],
        instance: str,
    ) -> None:
        self._members = members
        self._ranges = ranges
        self._lost: BaseException | None = None
        self._gone = False
        self.on_lost: Callable[[BaseException | None], None] | None = None
        self.probes: dict[Addr, bytes] = {}
        for lo, _, host, port in ranges:  # the first slot of each master's first range
            if (host, port) not in self.probes:
                tag = slot_tag(lo)
                self.probes[(host, port)] = pubsub_shard_probe_channel(instance, tag).encode()

    @classmethod
    async def open(cls, url: str, instance: str, *, timeout: float = 5.0) -> ShardedSubscriber:
        """Reads the slot map and opens a subscription connection to every master."""
        settings = ClusterSettings.from_url(url)
        ranges = await slot_map(settings, timeout=timeout)
        members: dict[Addr, SubscriberConnection] = {}
        try:
            for _, _, host, port in ranges:
                if (host, port) not in members:
                    members[(host, port)] = await SubscriberConnection.open(
                        settings.url_for(host, port), timeout=timeout
                    )
        except BaseException:
            for member in members.values():
                with contextlib.suppress(Exception):
                    await member.close()
            raise
        return cls(members, ranges, instance)

    def enter_push_mode(self, sink: Sink) -> None:
        """Push mode on every member, each subscribed to its own probe channel."""
        for addr, member in self._members.items():
            member.enter_push_mode(sink)
            member.on_lost = lambda exc, m=member: self._member_lost(m, exc)
            member.write([(b"SSUBSCRIBE", self.probes[addr])], 1)

    def probe_targets(self) -> list[tuple[SubscriberConnection, bytes]]:
        return [(self._members[addr], channel) for addr, channel in self.probes.items()]

    def write(self, commands: Sequence[Sequence[Arg]], confirmations: int) -> None:
        """(UN)SUBSCRIBE commands as SSUBSCRIBE/SUNSUBSCRIBE, one per slot, each on the
        master of its slot (`confirmations` is recounted per member)."""
        if self._lost is not None:
            raise MeetqConnectionError("subscription connection lost") from self._lost
        per_member: dict[Addr, list[tuple[bytes, ...]]] = {}
        counts: dict[Addr, int] = {}
        for command in commands:
            name = _SHARDED.get(bytes(command[0]))  # type: ignore[arg-type]
            if name is None:
                raise InvalidArgumentError(f"no sharded form of {command[0]!r} on Redis Cluster")
            by_slot: dict[int, list[bytes]] = {}
            for channel in command[1:]:
                raw = channel if isinstance(channel, bytes) else str(channel).encode()
                by_slot.setdefault(key_slot(raw), []).append(raw)
            for slot, channels in by_slot.items():
                try:
                    host, port = _owner(self._ranges, slot)
                except MeetqConnectionError as exc:
                    self.abort(exc)
                    raise
                per_member.setdefault((host, port), []).append((name, *channels))
                counts[(host, port)] = counts.get((host, port), 0) + len(channels)
                if name == b"SUNSUBSCRIBE":
                    self._members[(host, port)].expect_drops(channels)
        for addr, batch in per_member.items():
            self._members[addr].write(batch, counts[addr])

    async def confirmed(self) -> None:
        await asyncio.gather(*(m.confirmed() for m in self._members.values()))

    def hold(self) -> None:
        for member in self._members.values():
            member.hold()

    def release(self) -> None:
        for member in self._members.values():
            member.release()

    @property
    def closed(self) -> bool:
        return self._lost is not None or any(m.closed for m in self._members.values())

    @property
    def last_data(self) -> float:
        """The oldest proof of life among the members."""
        return min(m.last_data for m in self._members.values())

    def _member_lost(self, member: SubscriberConnection, cause: BaseException | None) -> None:
        if self._gone:
            return
        self._gone = True
        if self._lost is None:
            self._lost = cause or MeetqConnectionError("shard subscription closed")
        for other in self._members.values():
            if other is not member:
                other.abort(self._lost)  # no double delivery once the owner resubscribes
        if self.on_lost is not None:
            self.on_lost(self._lost)

    def abort(self, reason: BaseException) -> None:
        if self._lost is None:
            self._lost = reason
        for member in self._members.values():
            member.abort(reason)

    async def close(self) -> None:
        for member in self._members.values():
            with contextlib.suppress(Exception):
                await member.close()

    def owners(self) -> dict[Addr, int]:
        """(host, port) of each member -> channels it was told to subscribe (for tests)."""
        return {addr: m._written for addr, m in self._members.items()}

    def __repr__(self) -> str:
        return f"ShardedSubscriber({sorted(self._members)})"
