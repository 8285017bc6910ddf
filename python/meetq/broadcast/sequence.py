"""Gap detection for Pub/Sub: the last sequence number seen per (pattern, channel,
publisher). A jump is a gap (`from`..`to` missed: published while this subscriber was away,
or dropped by Redis), a number not above the last one is a repeat (a publish retried
after a lost reply)."""

from __future__ import annotations

from meetq.broadcast.message import PubSubMessage

MAX_TRACKED = 100_000
"""Sequences remembered; beyond this the oldest are forgotten (their next message starts
afresh, with no gap reported)."""


class SequenceTracker:
    def __init__(self) -> None:
        self._seen: dict[tuple[bytes, bytes, str], int] = {}
        self.gaps = 0
        self.missed = 0
        self.duplicates = 0

    def check(
        self, channel: bytes, pattern: bytes | None, msg: PubSubMessage
    ) -> tuple[int, int] | bool | None:
        """False for a repeat (drop it), `(from, to)` for a gap before `msg`, else None."""
        key = (pattern or b"", channel, msg.publisher)
        seen = self._seen
        last = seen.get(key)
        seq = msg.seq
        gap: tuple[int, int] | None = None
        if last is not None:
            if seq <= last:
                self.duplicates += 1
                return False
            if seq > last + 1:
                self.gaps += 1
                self.missed += seq - last - 1
                gap = (last + 1, seq - 1)
        elif len(seen) >= MAX_TRACKED:
            del seen[next(iter(seen))]
        seen[key] = seq
        return gap
