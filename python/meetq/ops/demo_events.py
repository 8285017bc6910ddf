"""The demo's events across services: the meeting service's `meeting.user_joined` is
broadcast on Redis Pub/Sub (at most once, to whoever listens now), the media service's
`media.stream_started` goes to a durable Redis Stream that an analytics service's consumer
group reads (at least once). Both are fed from the local bus, so one service event is
seen in-process, across processes, and durably."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from meetq import events as ev
from meetq.ops.demo_report import Tally

CHANNEL = "meeting_events"
TOPIC = "media_events"


class EventFanout:
    def __init__(self, url: str, tally: Tally) -> None:
        self.url = url
        self.tally = tally
        self.pubsub: Any = None
        self.streams: Any = None
        self.published = {"pubsub": 0, "stream": 0}
        self._sends: set[asyncio.Future[Any]] = set()

    async def start(self, stack: contextlib.AsyncExitStack, bus: Any) -> None:
        from meetq.broadcast import RedisPubSubQueue, RedisStreamEventBus

        t = self.tally
        self.pubsub = RedisPubSubQueue(self.url, source="meeting-service")

        def heard(msg: Any) -> None:
            t.events[f"pubsub {CHANNEL}"] += 1

        self.pubsub.subscribe(CHANNEL, heard)
        await stack.enter_async_context(self.pubsub)
        self.streams = RedisStreamEventBus(self.url, "analytics-service", block=0.5)

        def consumed(event: Any) -> None:
            t.events[f"stream {TOPIC}"] += 1

        self.streams.subscribe(TOPIC, consumed)
        await stack.enter_async_context(self.streams)
        stack.push_async_callback(self._flush)
        bus.on(ev.USER_JOINED, self._to_pubsub)
        bus.on(ev.STREAM_STARTED, self._to_stream)

    def _spawn(self, coro: Any) -> None:
        fut = asyncio.ensure_future(coro)
        self._sends.add(fut)
        fut.add_done_callback(self._sends.discard)

    def _to_pubsub(self, event: Any) -> None:
        from meetq.broadcast import PubSubMessage

        self.published["pubsub"] += 1
        msg = PubSubMessage(type=ev.USER_JOINED, payload=dict(event.payload))
        self._spawn(self.pubsub.publish(CHANNEL, msg))

    def _to_stream(self, event: Any) -> None:
        from meetq.broadcast import StreamEvent

        self.published["stream"] += 1
        self._spawn(
            self.streams.publish(TOPIC, StreamEvent(type=ev.STREAM_STARTED, payload=event.payload))
        )

    async def _flush(self) -> None:
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=10)

    def delivered(self) -> bool:
        """Every stream event published so far was handled by the analytics group."""
        return self.tally.events[f"stream {TOPIC}"] >= self.published["stream"]

    def summary(self) -> dict[str, str]:
        t = self.tally
        return {
            f"pubsub {CHANNEL}: published / heard": (
                f"{self.published['pubsub']:,} / {t.events[f'pubsub {CHANNEL}']:,}"
            ),
            f"stream {TOPIC}: published / consumed": (
                f"{self.published['stream']:,} / {t.events[f'stream {TOPIC}']:,}"
            ),
        }
