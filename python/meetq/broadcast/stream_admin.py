"""What a `RedisStreamEventBus` can say and do about its topics besides consuming: stats
(length, lag, pending, oldest pending age per group), replay by id or time, rewinding a
group, and the dead-letter stream."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from meetq._redis.keys import StreamKeys
from meetq.broadcast.message import DeadEvent, StreamEvent
from meetq.errors import MeetqError

if TYPE_CHECKING:
    from meetq._redis.links import Link
    from meetq._redis.router import ClusterRouter
    from meetq.broadcast.message import BroadcastCodec

log = logging.getLogger("meetq.broadcast.streams")


def entry_id(since: str | float | int) -> str:
    """A stream id from an id string (`1700000000000-0`, `0`, `-`) or epoch seconds."""
    if isinstance(since, str):
        return since
    return f"{int(since * 1000)}-0"


def _id_ms(eid: bytes | str) -> int:
    text = eid.decode() if isinstance(eid, bytes) else eid
    return int(text.split("-", 1)[0])


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): v
        for k, v in zip(flat[::2], flat[1::2], strict=True)
    }


class StreamAdmin:
    """Mixin of `RedisStreamEventBus`: the read-side tools."""

    service: str
    consumer: str
    _link: Link | ClusterRouter
    _codec: BroadcastCodec
    _handlers: dict[str, Any]
    _published: int
    _processed: int
    _retried: int
    _claimed: int
    _dead_lettered: int
    _malformed: int
    _trimmed: int
    _reaped: int
    _held: dict[Any, float]
    _runner: Any
    _state: str

    def _key(self, topic: str) -> StreamKeys:  # defined by the bus
        raise NotImplementedError

    async def replay(
        self,
        topic: str,
        since: str | float = "-",
        until: str | float = "+",
        count: int | None = 1000,
    ) -> list[StreamEvent]:
        """The events of `topic` from `since` to `until` (ids or epoch seconds, both
        included), oldest first, at most `count`. Read-only: no group is touched.
        Undecodable entries are skipped (and logged)."""
        args: list[Any] = ["XRANGE", self._key(topic).stream, entry_id(since), entry_id(until)]
        if count is not None:
            args += ["COUNT", count]
        entries = await self._link.execute(*args)
        out = []
        for eid, fields in entries:
            body = _pairs(fields).get("d")
            try:
                if not isinstance(body, bytes):
                    raise MeetqError("entry has no body")
                out.append(self._codec.decode_event(body, eid.decode(), topic, 0))
            except MeetqError as exc:
                log.warning("replay of %s skips malformed entry %s: %s", topic, eid, exc)
        return out

    async def rewind(self, topic: str, since: str | float) -> None:
        """Moves this service's group on `topic` back (or forward) to `since`: the events
        after it are delivered again to the service's consumers."""
        target = entry_id(since)
        if not isinstance(since, str):  # SETID names the last entry already seen
            ms = int(since * 1000)
            target = f"{ms - 1}-{2**64 - 1}" if ms > 0 else "0"
        await self._link.execute("XGROUP", "SETID", self._key(topic).stream, self.service, target)

    async def dead_letters(self, topic: str, count: int = 100) -> list[DeadEvent]:
        """The oldest `count` entries of the topic's dead-letter stream."""
        keys = self._key(topic)
        entries = await self._link.execute("XRANGE", keys.dead, "-", "+", "COUNT", count)
        out = []
        for dead_id, fields in entries:
            info = _pairs(fields)
            raw = info.get("d") or b""
            eid = (info.get("id") or b"").decode()
            try:
                event: StreamEvent | None = self._codec.decode_event(
                    raw, eid, topic, int(info.get("deliveries") or 0)
                )
            except MeetqError:
                event = None
            out.append(
                DeadEvent(
                    id=eid,
                    group=(info.get("group") or b"").decode(),
                    reason=(info.get("reason") or b"").decode(errors="replace"),
                    deliveries=int(info.get("deliveries") or 0),
                    event=event,
                    raw=raw,
                    dead_id=dead_id.decode(),
                )
            )
        return out

    async def purge_dead_letters(self, topic: str) -> int:
        """Deletes the topic's dead-letter stream; returns how many entries it held."""
        keys = self._key(topic)
        replies = await self._link.execute_many([("XLEN", keys.dead), ("DEL", keys.dead)])
        return int(replies[0])

    async def topic_stats(self, topic: str) -> dict[str, Any]:
        """Length, dead letters, and per group: pending, lag, oldest pending age (s),
        consumers, last delivered id."""
        keys = self._key(topic)
        replies = await self._link.execute_many(
            [
                ("TIME",),
                ("XLEN", keys.stream),
                ("XLEN", keys.dead),
                ("XINFO", "GROUPS", keys.stream),
            ]
        )
        now_ms = int(replies[0][0]) * 1000 + int(replies[0][1]) // 1000
        groups: dict[str, Any] = {}
        raw_groups = replies[3] if isinstance(replies[3], list) else []
        summaries = await self._link.execute_many(
            [("XPENDING", keys.stream, _pairs(g)["name"]) for g in raw_groups]
        ) if raw_groups else []  # fmt: skip
        for g, summary in zip(raw_groups, summaries, strict=True):
            info = _pairs(g)
            oldest = summary[1] if isinstance(summary, list) and summary[0] else None
            lag = info.get("lag")
            groups[info["name"].decode()] = {
                "pending": int(info["pending"]),
                "lag": int(lag) if lag is not None else None,
                "oldest_pending_age": max(0.0, (now_ms - _id_ms(oldest)) / 1000)
                if oldest is not None
                else 0.0,
                "consumers": int(info["consumers"]),
                "last_delivered_id": info["last-delivered-id"].decode(),
            }
        return {
            "length": int(replies[1]),
            "dead_letters": int(replies[2]),
            "groups": groups,
        }

    async def get_stats(self) -> dict[str, Any]:
        """This process's counters and, per subscribed topic, `topic_stats`."""
        return {
            "service": self.service,
            "consumer": self.consumer,
            "state": self._state,
            "total_published": self._published,
            "total_processed": self._processed,
            "total_failed": self._runner.failed,
            "total_retried": self._retried,
            "total_claimed": self._claimed,
            "total_dead_letter": self._dead_lettered,
            "total_malformed": self._malformed,
            "total_trimmed": self._trimmed,
            "consumers_removed": self._reaped,
            "in_flight": len(self._held),
            "topics": {t: await self.topic_stats(t) for t in self._handlers},
        }
