"""The demo's path without the gateway: services consume their Redis queues directly and
the simulated clients publish to them, as a dispatcher would (used when meetq[gateway] is
not installed)."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable
from typing import Any

from meetq.ops.common import redis_client
from meetq.ops.demo_report import Tally
from meetq.priority import Priority
from meetq.queue import Message, RedisMessageQueue

Handlers = dict[str, dict[str, Callable[[dict[str, Any]], Any]]]
SERVICE_QUEUES = {
    "ai-service": "ai_tasks",
    "media-service": "media_tasks",
    "meeting-service": "meeting_tasks",
    "signaling-service": "signaling_tasks",
}
# client type family -> (service, task type), as the seed maps them
_CLIENT_TYPES = {
    "ai.speech_recognition": ("ai-service", "speech_recognition"),
    "ai.emotion_detection": ("ai-service", "emotion_detection"),
    "media": ("media-service", "media_processing"),
    "meeting": ("meeting-service", "meeting_control"),
    "chat": ("signaling-service", "signaling"),
}


def route(kind: str) -> tuple[str, str] | None:
    return _CLIENT_TYPES.get(kind) or _CLIENT_TYPES.get(kind.partition(".")[0])


class QueuePath:
    name = "Redis queues (no gateway in this build)"

    def __init__(self, url: str, tally: Tally, handlers: Handlers) -> None:
        self.url = url
        self.tally = tally
        self.handlers = handlers
        self.queues: dict[str, RedisMessageQueue] = {}
        self._staged: dict[str, list[Message]] = {}

    @property
    def queue_names(self) -> list[str]:
        return [q.queue_name for q in self.queues.values()]

    async def start(
        self, stack: contextlib.AsyncExitStack, sessions: list[tuple[int, int]]
    ) -> None:
        client = redis_client(self.url)  # shared by the four queues, closed last
        stack.push_async_callback(client.aclose)
        for service, queue in SERVICE_QUEUES.items():
            q = RedisMessageQueue(client, queue, workers=16, retry_backoff=0.05)
            for mtype, fn in self.handlers.get(service, {}).items():
                q.register_handler(mtype, self._counting(fn))
            await stack.enter_async_context(q)
            self.queues[service] = q
        self.sessions = sessions

    def _counting(self, fn: Callable[[dict[str, Any]], Any]) -> Callable[[Message], Any]:
        """The handler, counting its completion and latency (there is no client to do it)."""
        t = self.tally

        def done(msg: Message, result: Any) -> Any:
            key = (msg.payload["client_type"], msg.payload["prio"])
            t.completed[key] += 1
            t.latencies.append(time.monotonic() - msg.payload["sent"])
            return result

        if inspect.iscoroutinefunction(fn):

            async def run_async(msg: Message) -> Any:
                return done(msg, await fn(msg.payload))

            return run_async
        return lambda msg: done(msg, fn(msg.payload))

    def send(self, session: int, kind: str, priority: str, data: dict[str, Any]) -> None:
        target = route(kind)
        if target is None or kind == "(not JSON)":
            self.tally.refused[kind] += 1
            return
        self._stage(target, kind, priority, data, 0)

    async def server_side(self, kind: str, priority: str, data: dict[str, Any]) -> None:
        """Published at once: it runs in a task of its own, possibly after the load's
        last flush, so staging it could leave it counted as sent and never published."""
        self._stage(("media-service", "recording"), kind, priority, data, 2)
        msg = self._staged["media-service"].pop()
        await self.queues["media-service"].publish(msg)

    def _stage(
        self, target: tuple[str, str], kind: str, priority: str, data: dict[str, Any], retries: int
    ) -> None:
        service, mtype = target
        self.tally.sent[(kind, priority)] += 1
        payload = {**data, "client_type": kind, "prio": priority, "sent": time.monotonic()}
        msg = Message(
            type=mtype, priority=Priority.parse(priority), payload=payload, max_retries=retries
        )
        self._staged.setdefault(service, []).append(msg)

    async def flush(self) -> None:
        staged, self._staged = self._staged, {}
        for service, msgs in staged.items():
            await self.queues[service].publish_batch(msgs)

    def outstanding(self) -> int:
        return -1  # unknown here: the demo waits on the queues' counters instead

    def components(self) -> dict[tuple[str, str], Callable[[], Any]]:
        return {}
