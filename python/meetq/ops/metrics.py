"""Prometheus metrics for `/metrics` (served by `meetq worker`, `meetq metrics`, the gateway).

`MetricsHub` owns a registry of its own and one custom collector. Queue figures come from
Redis: each watched queue costs a constant number of commands (`QueueInspector.snapshot`)
whatever its size, and snapshots are cached for `cache_ttl` seconds so that several
scrapers (or a scraper and the dashboard) share one read. In-process components (bus,
scheduler, dispatcher, sessions, AI service) are read from their `get_stats()` at
scrape time. Labels are only queue, priority, handler type and component names, all
bounded by configuration: nothing grows with the process's age or with worker churn.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from meetq.ops.http import HttpServer, Request, Response
from meetq.ops.queues import QueueInspector, QueueSnapshot, StreamSnapshot

log = logging.getLogger("meetq.ops.metrics")

HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_QUEUE_COUNTERS = (
    ("published", "messages published"),
    ("processed", "messages processed successfully"),
    ("failed", "failed handler attempts"),
    ("retried", "failed attempts scheduled for a retry"),
    ("dead_lettered", "messages moved to the dead-letter queue"),
)
_BUS = {
    "total_events": ("counter", "events", "events emitted into the bus"),
    "processed_events": ("counter", "processed", "events whose handlers all ran"),
    "failed_events": ("counter", "handler_failures", "failed handler runs"),
    "dropped_events": ("counter", "dropped", "events refused because the buffer was full"),
    "pending_events": ("gauge", "pending_events", "events waiting in the buffer"),
    "buffer_size": ("gauge", "buffer_size_events", "the buffer's bound"),
}
_SCHEDULER = {
    "total_tasks": ("counter", "tasks", "tasks submitted"),
    "completed_tasks": ("counter", "completed", "tasks completed"),
    "failed_tasks": ("counter", "failed", "tasks failed"),
    "cancelled_tasks": ("counter", "cancelled", "tasks cancelled"),
    "retried_tasks": ("counter", "retried", "task retries"),
    "active_tasks": ("gauge", "active_tasks", "tasks running now"),
    "delayed_tasks": ("gauge", "delayed_tasks", "tasks waiting for their time"),
    "pending_tasks": ("gauge", "pending_tasks", "ready tasks waiting for a worker"),
}
_KNOWN = {"bus": _BUS, "scheduler": _SCHEDULER}
_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def _metric_part(text: str) -> str:
    return _NAME_OK.sub("_", text).strip("_").lower() or "value"


class MetricsHub:
    """What one process exposes on /metrics."""

    def __init__(
        self,
        inspector: QueueInspector | None = None,
        queues: Iterable[str] = (),
        cache_ttl: float = 1.0,
    ) -> None:
        self.inspector = inspector
        self.cache_ttl = cache_ttl
        self._queues: list[str] = []
        for q in queues:
            self.watch_queue(q)
        self._components: dict[tuple[str, str], Callable[[], Any]] = {}
        self._component_stats: dict[tuple[str, str], dict[str, Any]] = {}
        self._snapshots: dict[str, QueueSnapshot] = {}
        self._streams: list[str] = []
        self._stream_snaps: dict[str, StreamSnapshot] = {}
        self._refreshed = 0.0
        self._refreshing: asyncio.Future[None] | None = None
        self._redis_up = 1
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_HubCollector(self))
        self.handler_duration = Histogram(
            "meetq_handler_duration_seconds",
            "Handler run time per queue and message type (this process)",
            ["queue", "type"],
            buckets=HANDLER_BUCKETS,
            registry=self.registry,
        )
        self.scrape_errors = Counter(
            "meetq_scrape_errors",
            "Reads of a source that failed during a scrape",
            ["source"],
            registry=self.registry,
        )

    # ------------------------------------------------------------------ configuration

    def watch_queue(self, name: str) -> None:
        if self.inspector is None:
            raise ValueError("watching a queue needs a QueueInspector")
        if name not in self._queues:
            self._queues.append(name)

    @property
    def queues(self) -> list[str]:
        return list(self._queues)

    def watch_stream(self, topic: str) -> None:
        """A RedisStreamEventBus topic: length, dead letters, lag and pending per group."""
        if self.inspector is None:
            raise ValueError("watching a stream needs a QueueInspector")
        if topic not in self._streams:
            self._streams.append(topic)

    @property
    def streams(self) -> list[StreamSnapshot]:
        return [s for t in self._streams if (s := self._stream_snaps.get(t)) is not None]

    def add_component(self, kind: str, name: str, get_stats: Callable[[], Any]) -> None:
        """`get_stats()` (sync or async) of an in-process component; `kind` is bus,
        scheduler, dispatcher, sessions, gateway, ai, ... and names the metrics."""
        self._components[(_metric_part(kind), name)] = get_stats

    def remove_component(self, kind: str, name: str) -> None:
        self._components.pop((_metric_part(kind), name), None)
        self._component_stats.pop((_metric_part(kind), name), None)

    # ------------------------------------------------------------------ reading

    def snapshot(self, queue: str) -> QueueSnapshot | None:
        return self._snapshots.get(queue)

    def component_stats(self) -> dict[tuple[str, str], dict[str, Any]]:
        return dict(self._component_stats)

    async def refresh(self, force: bool = False) -> None:
        """Re-reads every source unless the cache is younger than `cache_ttl`; concurrent
        callers share one read."""
        if not force and time.monotonic() - self._refreshed < self.cache_ttl:
            return
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        fut = self._refreshing = asyncio.get_running_loop().create_future()
        try:
            await self._read_all()
            self._refreshed = time.monotonic()
        finally:
            self._refreshing = None
            fut.set_result(None)

    async def _read_all(self) -> None:
        if self.inspector is not None and (self._queues or self._streams):
            try:
                for name in self._queues:
                    self._snapshots[name] = await self.inspector.snapshot(name)
                for topic in self._streams:
                    self._stream_snaps[topic] = await self.inspector.stream_snapshot(topic)
                self._redis_up = 1
            except Exception as exc:
                self._redis_up = 0
                self.scrape_errors.labels("redis").inc()
                log.warning("metrics: cannot read queues from Redis: %s", exc)
        for key, get_stats in list(self._components.items()):
            try:
                stats = get_stats()
                if inspect.isawaitable(stats):
                    stats = await stats
                self._component_stats[key] = dict(stats)
            except Exception as exc:
                self.scrape_errors.labels(key[0]).inc()
                log.warning("metrics: get_stats of %s %s failed: %s", key[0], key[1], exc)

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)

    def routes(self, server: HttpServer) -> None:
        async def metrics(_: Request) -> Response:
            return Response(200, await self.render(), CONTENT_TYPE_LATEST)

        server.route("GET", "/metrics", metrics)


class _HubCollector(Collector):
    """Builds the families from the hub's cached figures at each collect()."""

    def __init__(self, hub: MetricsHub) -> None:
        self.hub = hub

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        yield from self._queues([s for q in hub.queues if (s := hub.snapshot(q)) is not None])
        yield from self._streams(hub.streams)
        if hub.inspector is not None and (hub.queues or hub._streams):
            up = GaugeMetricFamily("meetq_redis_up", "1 when the last read of Redis succeeded")
            up.add_metric([], hub._redis_up)
            yield up
        yield from self._components(hub.component_stats())

    def _queues(self, snaps: list[QueueSnapshot]) -> Iterator[Metric]:
        labels = ["queue"]
        ready = GaugeMetricFamily(
            "meetq_queue_ready_messages",
            "Messages ready per priority",
            labels=[*labels, "priority"],
        )
        gauges = {
            "inflight": GaugeMetricFamily(
                "meetq_queue_inflight_messages", "Messages leased by a worker", labels=labels
            ),
            "delayed": GaugeMetricFamily(
                "meetq_queue_delayed_messages",
                "Messages waiting for their time (delays, retry backoff)",
                labels=labels,
            ),
            "dead_letters": GaugeMetricFamily(
                "meetq_queue_dead_letters", "Messages in the dead-letter queue", labels=labels
            ),
            "oldest_ready_age": GaugeMetricFamily(
                "meetq_queue_oldest_ready_age_seconds",
                "Age of the oldest ready message (since it was published)",
                labels=labels,
            ),
        }
        counters = {
            key: CounterMetricFamily(f"meetq_queue_{key}", f"Total {text}", labels=labels)
            for key, text in _QUEUE_COUNTERS
        }
        for s in snaps:
            for prio, n in s.ready.items():
                ready.add_metric([s.name, prio], n)
            for key, fam in gauges.items():
                fam.add_metric([s.name], getattr(s, key))
            for key, cfam in counters.items():
                cfam.add_metric([s.name], getattr(s, key))
        yield ready
        yield from gauges.values()
        yield from counters.values()

    def _streams(self, snaps: list[StreamSnapshot]) -> Iterator[Metric]:
        length = GaugeMetricFamily("meetq_stream_length", "Entries in the stream", labels=["topic"])
        dead = GaugeMetricFamily(
            "meetq_stream_dead_letters", "Entries in the stream's DLQ", labels=["topic"]
        )
        lag = GaugeMetricFamily(
            "meetq_stream_lag", "Entries not yet delivered to the group", labels=["topic", "group"]
        )
        pending = GaugeMetricFamily(
            "meetq_stream_pending",
            "Entries delivered to the group, not yet acked",
            labels=["topic", "group"],
        )
        for s in snaps:
            length.add_metric([s.topic], s.length)
            dead.add_metric([s.topic], s.dead_letters)
            for group, g in s.groups.items():
                if g["lag"] >= 0:
                    lag.add_metric([s.topic, group], g["lag"])
                pending.add_metric([s.topic, group], g["pending"])
        yield from (length, dead, lag, pending)

    def _components(self, stats: dict[tuple[str, str], dict[str, Any]]) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}

        def family(
            kind: str, mtype: str, metric: str, help_text: str, extra: list[str]
        ) -> CounterMetricFamily | GaugeMetricFamily:
            name = f"meetq_{kind}_{metric}"
            fam = families.get(name)
            if fam is None:
                labels = ["name", *extra]
                if mtype == "counter":
                    fam = CounterMetricFamily(name, help_text, labels=labels)
                else:
                    fam = GaugeMetricFamily(name, help_text, labels=labels)
                families[name] = fam
            return fam

        for (kind, name), values in sorted(stats.items()):
            known = _KNOWN.get(kind)
            for key, value in sorted(values.items()):
                if known is not None:
                    if key not in known:
                        continue
                    mtype, metric, help_text = known[key]
                else:
                    mtype, metric, help_text = _generic(kind, key)
                if isinstance(value, bool) or not isinstance(value, int | float | dict):
                    continue
                if isinstance(value, dict):
                    sub = {k: v for k, v in value.items() if isinstance(v, int | float)}
                    if not sub:
                        continue
                    fam = family(kind, mtype, metric, help_text, ["key"])
                    for k, v in sorted(sub.items()):
                        fam.add_metric([name, str(k)], float(v))
                else:
                    family(kind, mtype, metric, help_text, []).add_metric([name], float(value))
        yield from families.values()


def _generic(kind: str, key: str) -> tuple[str, str, str]:
    """A component's stats key as a metric: `total_x` counts, everything else is a level."""
    part = _metric_part(key)
    if part.startswith("total_"):
        return "counter", part.removeprefix("total_"), f"{kind} {key}"
    if part.endswith("_total"):
        return "counter", part.removesuffix("_total"), f"{kind} {key}"
    return "gauge", part, f"{kind} {key}"
