"""/metrics: scraped over HTTP, parsed with prometheus_client's parser, checked by
Prometheus's own promtool; O(1) Redis commands per queue, cached, bounded in size."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import RedisServer, async_wait_until, redis_client
from meetq import LocalEventBus, Message, Priority, RedisMessageQueue, TaskScheduler
from meetq.ops.http import HttpServer
from meetq.ops.metrics import MetricsHub
from meetq.ops.queues import QueueInspector


async def _scrape(url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=")
            text: str = r.read().decode()
            return text

    return await asyncio.get_running_loop().run_in_executor(None, get)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _publish(url: str, queue: str, n: int, priority: Priority = Priority.NORMAL) -> None:
    q = RedisMessageQueue(url, queue)
    try:
        for i in range(0, n, 1000):
            await q.publish_batch(
                [Message(type="t", priority=priority) for _ in range(min(1000, n - i))]
            )
    finally:
        await q.stop()


class CommandCounter:
    """Commands the server ran between two calls (INFO stats, over one open connection;
    calls made inside Lua scripts count too), not counting the INFO calls themselves."""

    def __init__(self, r: Any) -> None:
        self.r = r
        self.last = 0

    async def mark(self) -> None:
        self.last = int((await self.r.info("stats"))["total_commands_processed"]) + 1

    async def since(self) -> int:
        now = int((await self.r.info("stats"))["total_commands_processed"])
        return now - self.last


async def test_scrape_parses_and_passes_promtool(redis_server: RedisServer) -> None:
    url = redis_server.url
    await _publish(url, "ai_tasks", 3, Priority.HIGH)
    await _publish(url, "ai_tasks", 2, Priority.LOW)
    inspector = QueueInspector(url)
    bus = LocalEventBus(buffer_size=16, workers=1)
    sched = TaskScheduler(buffer_size=16, workers=1)
    hub = MetricsHub(inspector, ["ai_tasks", "media_tasks"])
    hub.add_component("bus", "local", bus.get_stats)
    hub.add_component("scheduler", "local", sched.get_stats)
    hub.add_component("dispatcher", "d1", lambda: {"total_dispatched": 7, "active_tasks": 2})
    ai_stats = {  # AIService.get_stats's shape: the AI node latency per type, node health
        "completed": 3,
        "latency_p50_seconds": {"speech_recognition": 0.027},
        "nodes": {"asr/pocketsphinx #0": "up, 0 in flight"},
    }
    hub.add_component("ai", "ai-service", lambda: ai_stats)
    hub.handler_duration.labels("ai_tasks", "t").observe(0.003)
    for _ in range(20):
        bus.emit("x", {})  # not started: 16 wait, 4 are dropped
    server = HttpServer()
    hub.routes(server)
    async with server:
        text = await _scrape(f"{server.url}/metrics")
    await inspector.close()
    s = _samples(text)
    assert s[("meetq_queue_ready_messages", (("priority", "high"), ("queue", "ai_tasks")))] == 3
    assert s[("meetq_queue_ready_messages", (("priority", "low"), ("queue", "ai_tasks")))] == 2
    assert s[("meetq_queue_published_total", (("queue", "ai_tasks"),))] == 5
    assert s[("meetq_queue_ready_messages", (("priority", "high"), ("queue", "media_tasks")))] == 0
    assert s[("meetq_queue_oldest_ready_age_seconds", (("queue", "ai_tasks"),))] >= 0
    assert s[("meetq_bus_dropped_total", (("name", "local"),))] == 4
    assert s[("meetq_bus_pending_events", (("name", "local"),))] == 16
    assert s[("meetq_scheduler_active_tasks", (("name", "local"),))] == 0
    assert s[("meetq_dispatcher_dispatched_total", (("name", "d1"),))] == 7
    assert s[("meetq_dispatcher_active_tasks", (("name", "d1"),))] == 2
    assert s[("meetq_handler_duration_seconds_count", (("queue", "ai_tasks"), ("type", "t")))] == 1
    assert s[("meetq_redis_up", ())] == 1
    latency = (
        "meetq_ai_latency_p50_seconds",
        (("key", "speech_recognition"), ("name", "ai-service")),
    )
    assert s[latency] == 0.027

    problems = _promtool_check(text)
    assert problems is None, problems


def _promtool_check(text: str) -> str | None:
    """Prometheus's own linter on an exposition: None when clean, else what it says."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: the Makefile's APT_PACKAGES installs `prometheus`")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    return None if check.returncode == 0 else check.stdout + check.stderr


async def test_scrape_costs_the_same_for_10_or_20000_messages(redis_server: RedisServer) -> None:
    url = redis_server.url
    inspector = QueueInspector(url)
    hub = MetricsHub(inspector, ["small", "big"], cache_ttl=0.0)
    try:
        async with redis_client(url) as r:
            count = CommandCounter(r)
            await _publish(url, "small", 10)
            await _publish(url, "big", 10, Priority.CRITICAL)
            await hub.refresh(force=True)  # scripts loaded, connections open
            await count.mark()
            await hub.refresh(force=True)
            small_cost = await count.since()
            await _publish(url, "small", 20_000)
            await _publish(url, "big", 20_000, Priority.CRITICAL)
            await count.mark()
            await hub.refresh(force=True)
            big_cost = await count.since()
        assert big_cost == small_cost
        assert small_cost <= 2 * 16  # per queue: one stats script (~10 calls), 4 LINDEX, HMGET
    finally:
        await inspector.close()


async def test_scrapes_share_one_read_within_the_cache_ttl(redis_server: RedisServer) -> None:
    url = redis_server.url
    await _publish(url, "cached", 1)
    inspector = QueueInspector(url)
    hub = MetricsHub(inspector, ["cached"], cache_ttl=60.0)
    try:
        await hub.render()
        async with redis_client(url) as r:
            count = CommandCounter(r)
            await count.mark()
            await asyncio.gather(*(hub.render() for _ in range(10)))
            assert await count.since() == 0
        await _publish(url, "cached", 1)
        still = _samples((await hub.render()).decode())
        assert (
            still[("meetq_queue_ready_messages", (("priority", "normal"), ("queue", "cached")))]
            == 1
        )
    finally:
        await inspector.close()


async def test_exposition_does_not_grow_with_age_or_worker_churn(redis_server: RedisServer) -> None:
    url = redis_server.url
    inspector = QueueInspector(url)
    hub = MetricsHub(inspector, ["churn"], cache_ttl=0.0)
    try:
        first = (await hub.render()).decode()
        for round_ in range(5):  # workers come and go, each processing messages
            q = RedisMessageQueue(url, "churn", workers=2)
            q.register_handler("t", lambda m: None)
            async with q:
                await q.publish_batch([Message(type="t") for _ in range(20)])
                total = 20 * (round_ + 1)

                async def processed(q: RedisMessageQueue = q, total: int = total) -> bool:
                    return bool((await q.get_stats())["total_processed"] >= total)

                await async_wait_until(processed, timeout=20, interval=0.01)
            for _ in range(10):
                await hub.render()
        last = (await hub.render()).decode()
        assert len(last.splitlines()) == len(first.splitlines())
        s = _samples(last)
        assert s[("meetq_queue_processed_total", (("queue", "churn"),))] == 100
    finally:
        await inspector.close()


async def test_redis_down_is_reported_not_raised(redis_server: RedisServer) -> None:
    inspector = QueueInspector(redis_server.url)
    hub = MetricsHub(inspector, ["q"], cache_ttl=0.0)
    try:
        await hub.render()
        redis_server.stop()
        s = _samples((await hub.render()).decode())
        assert s[("meetq_redis_up", ())] == 0
        assert s[("meetq_scrape_errors_total", (("source", "redis"),))] == 1
    finally:
        await inspector.close()


def _spawn_metrics(url: str, port: int) -> subprocess.Popen[str]:
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "meetq", "--redis-url", url, "metrics", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> int:
    import signal

    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


async def test_meetq_metrics_command_serves_metrics(redis_server: RedisServer) -> None:
    from helpers import free_port

    await _publish(redis_server.url, "served", 4)
    port = free_port()
    proc = _spawn_metrics(redis_server.url, port)
    try:
        assert proc.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert f"127.0.0.1:{port}/metrics (1 queue(s))" in line, line
        s = _samples(await _scrape(f"http://127.0.0.1:{port}/metrics"))
        assert s[("meetq_queue_ready_messages", (("priority", "normal"), ("queue", "served")))] == 4
    finally:
        assert _stop(proc) == 0


async def _stream_with_backlog(url: str, topic: str) -> None:
    """A topic's stream with one group that read 3 of 5 entries and acked 1."""
    from meetq._redis.keys import StreamKeys

    keys = StreamKeys(topic)
    async with redis_client(url) as r:
        for i in range(5):
            await r.xadd(keys.stream, {"n": i})
        await r.xadd(keys.dead, {"n": 99})
        await r.xgroup_create(keys.stream, "media-service", id="0")
        got = await r.xreadgroup("media-service", "c1", {keys.stream: ">"}, count=3)
        first = got[0][1][0][0]
        await r.xack(keys.stream, "media-service", first)


async def test_stream_lag_and_pending(redis_server: RedisServer) -> None:
    url = redis_server.url
    await _stream_with_backlog(url, "meeting_events")
    inspector = QueueInspector(url)
    hub = MetricsHub(inspector, cache_ttl=0.0)
    try:
        assert await inspector.discover_streams() == ["meeting_events"]
        hub.watch_stream("meeting_events")
        hub.watch_stream("never_written")
        text = (await hub.render()).decode()
    finally:
        await inspector.close()
    s = _samples(text)
    group = (("group", "media-service"), ("topic", "meeting_events"))
    assert s[("meetq_stream_lag", group)] == 2
    assert s[("meetq_stream_pending", group)] == 2
    assert s[("meetq_stream_length", (("topic", "meeting_events"),))] == 5
    assert s[("meetq_stream_dead_letters", (("topic", "meeting_events"),))] == 1
    assert s[("meetq_stream_length", (("topic", "never_written"),))] == 0
    assert _promtool_check(text) is None
