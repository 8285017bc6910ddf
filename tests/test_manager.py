"""QueueManager with real components on a real redis-server: the seed's integration example,
start/stop ordering and idempotence, a failed start, the stats shape, health."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers import RedisServer, async_wait_until, free_port
from meetq import (
    LocalEvent,
    Message,
    Priority,
    PubSubMessage,
    QueueManager,
    StreamEvent,
    Task,
    events,
)


async def test_seed_integration_example(redis_url: str) -> None:
    """The seed's QueueManager example, then each component doing its job."""
    qm = QueueManager(redis_url)
    qm.init_message_queue("tasks", 4)
    qm.init_local_event_bus(1000, 4)
    qm.init_task_scheduler(1000, 8)
    bus = qm.init_event_bus("events")
    processed: list[str] = []
    local: list[LocalEvent] = []
    durable: list[StreamEvent] = []
    queue = qm.get_message_queue()
    local_bus = qm.get_local_event_bus()
    scheduler = qm.get_task_scheduler()
    assert queue is not None and local_bus is not None and scheduler is not None
    assert qm.get_event_bus() is bus
    queue.register_handler("speech_recognition", lambda m: processed.append(m.id))
    local_bus.on(events.STREAM_STARTED, local.append)
    bus.subscribe(events.USER_JOINED, durable.append)
    await qm.start()
    try:
        ids = await queue.publish_batch(
            [Message(type="speech_recognition", priority=Priority.HIGH, payload={"n": n})
             for n in range(5)]
        )  # fmt: skip
        local_bus.emit(events.STREAM_STARTED, {"stream_id": "stream_123"}, "media_service")
        tid = scheduler.submit(Task(type="video_processing", handler=lambda t: 42))
        await bus.publish(events.USER_JOINED, "user_joined", {"user_id": 123, "meeting_id": 456})
        await async_wait_until(lambda: len(processed) == 5 and local and durable)
        result = await scheduler.wait(tid)
        assert result.status == "completed"
        assert sorted(processed) == sorted(ids)
        assert local[0].payload == {"stream_id": "stream_123"}
        assert durable[0].payload == {"user_id": 123, "meeting_id": 456}

        stats = await qm.get_stats()
        assert {"message_queue", "local_event_bus", "task_scheduler", "event_bus"} <= set(stats)
        mq = stats["message_queue"]
        for key in ("total_length", "critical", "high", "normal", "low"):
            assert isinstance(mq[key], int)
        assert mq["total_published"] == 5
        lb = stats["local_event_bus"]
        for key in ("total_events", "processed_events", "failed_events", "dropped_events"):
            assert isinstance(lb[key], int)
        assert lb["total_events"] == 1
        ts = stats["task_scheduler"]
        for key in ("total_tasks", "completed_tasks", "failed_tasks", "active_tasks"):
            assert isinstance(ts[key], int)
        assert ts["total_tasks"] == 1 and ts["completed_tasks"] == 1
        assert stats["event_bus"]["topics"][events.USER_JOINED]["length"] == 1

        health = await qm.health()
        assert health["healthy"] and health["redis"]["ok"]
        assert health["redis"]["latency_ms"] is not None
        assert set(health["components"]) == set(stats)
    finally:
        await qm.stop()
    assert not qm.running


async def test_queue_stats_follow_the_seed_shape(redis_url: str) -> None:
    qm = QueueManager(redis_url)
    queue = qm.init_message_queue("tasks")
    await queue.publish_batch(
        [Message(type="t", priority=p) for p in
         (Priority.CRITICAL, Priority.HIGH, Priority.HIGH, Priority.NORMAL, Priority.LOW)]
    )  # fmt: skip
    stats = (await qm.get_stats())["message_queue"]  # readable before start, like the queue
    assert (stats["total_length"], stats["critical"], stats["high"]) == (5, 1, 2)
    assert (stats["normal"], stats["low"]) == (1, 1)
    await qm.stop()


class Recorder:
    """A component that records its start/stop into a shared log, and can fail to start."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail
        self.state = "stopped"

    async def start(self) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")
        self.state = "running"

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        self.state = "stopped"

    @property
    def healthy(self) -> bool:
        return self.state == "running"


async def test_dependency_order_reverse_stop_and_idempotence(redis_url: str) -> None:
    qm = QueueManager(redis_url)
    log: list[str] = []
    qm.add_component("late", Recorder("late", log))  # after the dispatcher's rank
    ps = qm.init_pubsub()
    queue = qm.init_message_queue("tasks")
    bus = qm.init_local_event_bus()
    qm.add_component("early", Recorder("early", log), after="local_event_bus")
    assert qm._start_order() == ["local_event_bus", "early", "message_queue", "pubsub", "late"]
    await qm.start()
    await qm.start()  # idempotent
    assert log == ["start early", "start late"]
    assert ps.state == "live" and qm.running
    # the pubsub was given the local bus for its local events
    assert ps.local_bus is bus
    with pytest.raises(Exception, match="before start"):
        qm.init_task_scheduler()
    await qm.stop()
    await qm.stop()  # idempotent
    assert log == ["start early", "start late", "stop late", "stop early"]
    assert ps.state == "stopped"
    assert queue is qm.get_message_queue("tasks")


async def test_failed_start_stops_what_already_started(redis_url: str) -> None:
    qm = QueueManager(redis_url)
    log: list[str] = []
    ps = qm.init_pubsub()
    qm.add_component("a", Recorder("a", log), after="local_event_bus")
    qm.add_component("b", Recorder("b", log))
    qm.add_component("broken", Recorder("broken", log, fail=True))
    qm.add_component("never", Recorder("never", log))
    with pytest.raises(RuntimeError, match="broken cannot start"):
        await qm.start()
    assert log == ["start a", "start b", "stop b", "stop a"]
    assert ps.state == "stopped" and not qm.running
    health = await qm.health()
    assert not health["healthy"] and health["redis"]["ok"]
    await qm.stop()


async def test_health_reports_redis_down(redis_server: RedisServer) -> None:
    qm = QueueManager(redis_server.url)
    qm.init_local_event_bus()
    async with qm:
        assert (await qm.health())["healthy"]
        await asyncio.get_running_loop().run_in_executor(None, redis_server.kill)
        health = await qm.health(timeout=1.0)
        assert not health["healthy"] and not health["redis"]["ok"]
        assert health["redis"]["error"]
        assert health["components"]["local_event_bus"]["healthy"]


async def test_pubsub_through_the_manager_and_a_client(redis_url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    qm = QueueManager(client)
    ps = qm.init_pubsub()
    got: list[Any] = []
    ps.subscribe("meeting_events", got.append)
    async with qm:
        await ps.publish("meeting_events", PubSubMessage(type="user_joined"))
        await async_wait_until(lambda: got)
        stats = await qm.get_stats()
        assert stats["pubsub"]["total_received"] == 1
    assert await client.ping()  # the caller's client is not closed by the manager
    await client.aclose()


async def test_task_dispatcher_through_the_manager(redis_url: str) -> None:
    """init_task_dispatcher wires meetq.dispatch's TaskDispatcher in; a ServiceWorker added
    as a component answers it, and the manager's stats and health include both."""
    from meetq import ServiceWorker, TaskRequest, TaskStatus, TaskType

    qm = QueueManager(redis_url)
    dispatcher = qm.init_task_dispatcher()
    worker = qm.add_component("ai_worker", ServiceWorker(redis_url, "ai-service"))
    worker.register_handler(TaskType.SPEECH_RECOGNITION, lambda req: {"text": "hi"})
    assert qm.get_task_dispatcher() is dispatcher
    async with qm:
        final = await dispatcher.dispatch_and_wait(
            TaskRequest(type=TaskType.SPEECH_RECOGNITION, user_id=1, meeting_id=2,
                        session_id="s", payload={}, timeout=30)
        )  # fmt: skip
        assert final.status == TaskStatus.COMPLETED and final.result == {"text": "hi"}
        stats = await qm.get_stats()
        assert stats["task_dispatcher"]["total_dispatched"] == 1
        assert "ai_worker" in stats
        assert (await qm.health())["redis"]["ok"]


async def test_unreachable_redis_fails_start_cleanly() -> None:
    qm = QueueManager(f"redis://127.0.0.1:{free_port()}/0")
    qm.init_local_event_bus()
    qm.init_pubsub(retry_budget=0.2)
    with pytest.raises(Exception, match="pubsub"):
        await qm.start()
    assert not qm.running
    assert qm.get_local_event_bus() is not None
