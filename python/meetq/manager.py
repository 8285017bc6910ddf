"""`QueueManager`: owns every component of one service process and starts, stops, counts and
checks them together (the seed's QueueManager).

    qm = QueueManager("redis://127.0.0.1:6379/0")      # or a redis.asyncio client
    qm.init_message_queue("tasks", workers=4); qm.init_local_event_bus(1000, 4)
    qm.init_task_scheduler(1000, 8); qm.init_event_bus("events"); qm.init_task_dispatcher()
    async with qm: ...                                  # = await qm.start() / await qm.stop()
    await qm.get_stats(); await qm.health()

Order. Components start in dependency order: the in-process ones first (local event bus,
task scheduler), then the Redis-backed ones (message queues, Pub/Sub, which emits its
local events on the bus, the Streams event bus), then the task dispatcher, which sends
through the queues. `stop()` goes in reverse. Both are idempotent; a start that fails stops
what it had already started, in reverse, and raises the error.

`init_event_bus(service)` makes a `RedisStreamEventBus` whose consumer group is `service`
(the seed's `InitEventBus("events")`); `init_pubsub()` a `RedisPubSubQueue`. The dispatcher
is imported only when `init_task_dispatcher` is called.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from typing import Any, Self

import redis.asyncio

from meetq.broadcast import RedisPubSubQueue, RedisStreamEventBus
from meetq.errors import MeetqError
from meetq.local import LocalEventBus, TaskScheduler
from meetq.queue import RedisMessageQueue

log = logging.getLogger("meetq.manager")

_ORDER = {
    "local_event_bus": 0,
    "task_scheduler": 1,
    "message_queue": 2,
    "pubsub": 3,
    "event_bus": 4,
    "task_dispatcher": 5,
}
"""Start rank of each kind of component (stop is the reverse)."""


class QueueManager:
    """Every component of a process in one place; see the module docstring."""

    def __init__(self, redis_or_url: str | redis.asyncio.Redis, config: Any = None) -> None:
        self.redis = redis_or_url
        self.config = config
        self._components: dict[str, tuple[str, Any]] = {}  # name -> (kind, component)
        self._started: list[str] = []
        self._lock: asyncio.Lock | None = None
        self._running = False
        self._client: redis.asyncio.Redis | None = None

    # -- building ------------------------------------------------------------------------------

    def _add(self, kind: str, name: str, component: Any) -> Any:
        if self._running:
            raise MeetqError("add components before start()")
        if name in self._components:
            raise ValueError(f"component {name!r} already exists")
        self._components[name] = (kind, component)
        return component

    def init_message_queue(self, name: str, workers: int = 4, **kw: Any) -> RedisMessageQueue:
        """A `RedisMessageQueue` named `name` (several may be added; the first is
        `get_message_queue()`)."""
        key = "message_queue" if not self._of_kind("message_queue") else f"message_queue:{name}"
        queue = RedisMessageQueue(self.redis, name, workers=workers, **kw)
        result: RedisMessageQueue = self._add("message_queue", key, queue)
        return result

    def init_local_event_bus(
        self, buffer_size: int = 1000, workers: int = 4, **kw: Any
    ) -> LocalEventBus:
        bus: LocalEventBus = self._add(
            "local_event_bus", "local_event_bus", LocalEventBus(buffer_size, workers, **kw)
        )
        return bus

    def init_task_scheduler(
        self, buffer_size: int = 1000, workers: int = 8, **kw: Any
    ) -> TaskScheduler:
        scheduler: TaskScheduler = self._add(
            "task_scheduler", "task_scheduler", TaskScheduler(buffer_size, workers, **kw)
        )
        return scheduler

    def init_event_bus(self, service: str = "events", **kw: Any) -> RedisStreamEventBus:
        """The durable Streams event bus; `service` names this service's consumer group."""
        bus: RedisStreamEventBus = self._add(
            "event_bus", "event_bus", RedisStreamEventBus(self.redis, service, **kw)
        )
        return bus

    def init_pubsub(self, **kw: Any) -> RedisPubSubQueue:
        """Pub/Sub broadcast; its local events (reconnected, gap) also go to the local
        event bus when the manager has one (wired at start, unless `local_bus=` was given)."""
        pubsub: RedisPubSubQueue = self._add("pubsub", "pubsub", RedisPubSubQueue(self.redis, **kw))
        return pubsub

    def init_task_dispatcher(self, **kw: Any) -> Any:
        """A `TaskDispatcher` (meetq.dispatch, imported now, not by `import meetq`)."""
        dispatch = importlib.import_module("meetq.dispatch")
        dispatcher = dispatch.TaskDispatcher(self.redis, **kw)
        return self._add("task_dispatcher", "task_dispatcher", dispatcher)

    def add_component(self, name: str, component: Any, after: str = "task_dispatcher") -> Any:
        """Any object with async `start`/`stop` (and optionally `get_stats`, `state`,
        `healthy`), started after the components of kind `after`."""
        return self._add(after, name, component)

    # -- getters -------------------------------------------------------------------------------

    def _of_kind(self, kind: str) -> list[Any]:
        return [c for k, c in self._components.values() if k == kind]

    def _first(self, kind: str) -> Any:
        found = self._of_kind(kind)
        return found[0] if found else None

    def get_message_queue(self, name: str | None = None) -> RedisMessageQueue | None:
        queues: list[RedisMessageQueue] = self._of_kind("message_queue")
        if name is None:
            return queues[0] if queues else None
        return next((q for q in queues if q.queue_name == name), None)

    def get_local_event_bus(self) -> LocalEventBus | None:
        bus: LocalEventBus | None = self._first("local_event_bus")
        return bus

    def get_task_scheduler(self) -> TaskScheduler | None:
        scheduler: TaskScheduler | None = self._first("task_scheduler")
        return scheduler

    def get_event_bus(self) -> RedisStreamEventBus | None:
        bus: RedisStreamEventBus | None = self._first("event_bus")
        return bus

    def get_pubsub(self) -> RedisPubSubQueue | None:
        pubsub: RedisPubSubQueue | None = self._first("pubsub")
        return pubsub

    def get_task_dispatcher(self) -> Any:
        return self._first("task_dispatcher")

    def get_component(self, name: str) -> Any:
        entry = self._components.get(name)
        return entry[1] if entry else None

    # -- life cycle ----------------------------------------------------------------------------

    def _start_order(self) -> list[str]:
        names = list(self._components)
        return sorted(names, key=lambda n: (_ORDER.get(self._components[n][0], 6), names.index(n)))

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Starts every component in dependency order; on a failure stops the ones already
        started (reverse order) and raises."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._running:
                return
            bus = self.get_local_event_bus()
            for pubsub in self._of_kind("pubsub"):
                if bus is not None and pubsub.local_bus is None:
                    pubsub.local_bus = bus
            for name in self._start_order():
                try:
                    await self._components[name][1].start()
                except BaseException:
                    log.error("starting %s failed; stopping %s", name, self._started[::-1])
                    await self._stop_started()
                    raise
                self._started.append(name)
            self._running = True

    async def stop(self) -> None:
        """Stops every started component in reverse order (each one even if another's stop
        raised; the first error is raised at the end)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._running:
                self._running = False
                await self._stop_started()
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    async def _stop_started(self) -> None:
        first: BaseException | None = None
        while self._started:
            name = self._started.pop()
            try:
                await self._components[name][1].stop()
            except Exception as exc:
                log.exception("stopping %s failed", name)
                first = first or exc
        if first is not None:
            raise first

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- stats and health ------------------------------------------------------------------

    async def get_stats(self) -> dict[str, Any]:
        """The seed's shape: `message_queue` (total_length, critical, high, normal, low,
        and the queue's own counters), `local_event_bus`, `task_scheduler`, and every other
        component's `get_stats()` under its name. A component whose stats cannot be read
        reports `{"error": ...}` instead of failing the whole call."""
        out: dict[str, Any] = {}
        for name, (kind, component) in self._components.items():
            getter = getattr(component, "get_stats", None)
            if getter is None:
                continue
            try:
                value = getter()
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            if kind == "message_queue" and isinstance(value, dict):
                lengths = value.get("queue_length", {})
                value = {
                    "total_length": lengths.get("total", 0),
                    "critical": lengths.get("critical", 0),
                    "high": lengths.get("high", 0),
                    "normal": lengths.get("normal", 0),
                    "low": lengths.get("low", 0),
                    **value,
                }
            out[name] = value
        return out

    async def health(self, timeout: float = 2.0) -> dict[str, Any]:
        """Redis reachability (PING round trip) and each component's state; `healthy` is
        True when Redis answers and every started component says it is healthy."""
        redis_ok, latency, error = await self._ping(timeout)
        components: dict[str, Any] = {}
        for name, (_, component) in self._components.items():
            started = name in self._started
            state = getattr(component, "state", None)
            healthy = getattr(component, "healthy", None)
            if healthy is None:
                healthy = started
            components[name] = {
                "state": str(state) if state is not None else ("running" if started else "stopped"),
                "healthy": bool(healthy) and started,
            }
        return {
            "healthy": redis_ok
            and self._running
            and all(c["healthy"] for c in components.values()),
            "running": self._running,
            "redis": {"ok": redis_ok, "latency_ms": latency, "error": error},
            "components": components,
        }

    async def _ping(self, timeout: float) -> tuple[bool, float | None, str | None]:
        client: redis.asyncio.Redis
        if isinstance(self.redis, str):
            if self._client is None:
                self._client = redis.asyncio.Redis.from_url(
                    self.redis, socket_connect_timeout=timeout, socket_timeout=timeout
                )
            client = self._client
        else:
            client = self.redis
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await client.ping()
        except Exception as exc:
            return False, None, f"{type(exc).__name__}: {exc}"
        finally:
            if client is self._client and not self._running:
                self._client = None  # a check outside start/stop leaves nothing open
                await client.aclose()
        return True, (time.perf_counter() - t0) * 1000, None
