"""TaskDispatcher, ServiceWorker and ClientTaskManager on a real Redis Cluster (3 masters,
3 replicas): results, timeout, retry -> DLQ, cancel, sessions, services on different shards,
and a failover of a busy service's master."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio

from cluster import Cluster, cli, running_cluster
from helpers import async_wait_until
from meetq import (
    MeetqConnectionError,
    MeetqError,
    ServiceRoute,
    ServiceWorker,
    TaskDispatcher,
    TaskRequest,
    TaskResponse,
    TaskStatus,
    TaskType,
)
from meetq._redis.cluster import SlotConnection, key_slot
from meetq._redis.keys import QueueKeys
from meetq.gateway import ClientTaskManager, ClientTaskRequest


def slot_of(queue: str) -> int:
    return key_slot(QueueKeys(queue).prefix)


def queues_on_every_shard(cluster: Cluster, stem: str) -> list[str]:
    return cluster.names_on_every_shard(stem, slot_of)


def route(queue: str) -> ServiceRoute:
    return ServiceRoute(f"svc-{queue}", queue, [f"echo-{queue}", f"boom-{queue}", f"hang-{queue}"])


def worker(url: str | redis.asyncio.Redis, queue: str, **kw: Any) -> ServiceWorker:
    """A ServiceWorker for `route(queue)`: echo returns its payload, boom raises, hang waits
    until cancelled."""
    w = ServiceWorker(url, f"svc-{queue}", queue_name=queue, retry_backoff=0.01, **kw)
    w.register_handler(f"echo-{queue}", lambda req: {"echo": req.payload, "queue": queue})

    def boom(req: TaskRequest) -> None:
        raise RuntimeError("handler exploded")

    async def hang(req: TaskRequest) -> None:
        await asyncio.Event().wait()

    w.register_handler(f"boom-{queue}", boom)
    w.register_handler(f"hang-{queue}", hang)
    return w


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as c:
        yield c


async def test_results_come_back_from_services_on_three_shards(cluster: Cluster) -> None:
    url = cluster.cluster_url
    names = queues_on_every_shard(cluster, "svc-q")
    assert len({cluster.master_of(slot_of(q)) for q in names}) == 3
    workers = [worker(url, q) for q in names]
    for w in workers:
        await w.start()
    try:
        async with TaskDispatcher(url, routes=[route(q) for q in names]) as d:
            finals = await asyncio.gather(
                *(
                    d.dispatch_and_wait(TaskRequest(type=f"echo-{q}", payload={"i": i}, timeout=20))
                    for i, q in enumerate(names)
                )
            )
            for i, (q, final) in enumerate(zip(names, finals, strict=True)):
                assert final.status is TaskStatus.COMPLETED, final
                assert final.result == {"echo": {"i": i}, "queue": q}
                assert final.task_id.endswith("@" + q)
            # one batch over all three shards: every task resolves once, on its own shard
            got: list[TaskResponse] = []
            batch = [
                TaskRequest(type=f"echo-{q}", payload={"n": n}, timeout=20)
                for n in range(30)
                for q in names
            ]
            sent = await d.dispatch_batch(batch, got.append)
            assert [r.status for r in sent] == [TaskStatus.PENDING] * len(batch)
            await async_wait_until(lambda: len(got) >= len(batch), timeout=30)
            assert sorted(r.task_id for r in got) == sorted(r.id for r in batch)
            assert {r.status for r in got} == {TaskStatus.COMPLETED}
            stats = d.get_stats()
            assert stats["total_completed"] == len(batch) + 3 and stats["active_tasks"] == 0
            assert stats["late_replies"] == 0
            # each status hash lives on its queue's master; any process reads it
            code = (
                "import asyncio, sys, meetq\n"
                "async def main():\n"
                "    async with meetq.TaskDispatcher(sys.argv[1]) as d:\n"
                "        for tid in sys.argv[2:]:\n"
                "            req, st = await d.get_task_status(tid)\n"
                "            print(req.type, st.value)\n"
                "asyncio.run(main())\n"
            )
            ids = [f.task_id for f in finals]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, url, *ids, stdout=subprocess.PIPE
            )
            stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0
            assert stdout.decode().split("\n")[:3] == [f"echo-{q} completed" for q in names]
    finally:
        for w in workers:
            await w.stop()


async def test_a_given_redis_cluster_client(cluster: Cluster) -> None:
    """A caller's RedisCluster works for the dispatcher and the worker, and is left open."""
    queue = queues_on_every_shard(cluster, "given-q")[0]
    client = redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        w = worker(client, queue)
        await w.start()
        try:
            async with TaskDispatcher(client, routes=[route(queue)]) as d:
                final = await d.dispatch_and_wait(
                    TaskRequest(type=f"echo-{queue}", payload={"g": 1}, timeout=20)
                )
                assert final.status is TaskStatus.COMPLETED
                assert final.result == {"echo": {"g": 1}, "queue": queue}
        finally:
            await w.stop()
        assert await client.ping()
    finally:
        await client.aclose()


BUSY_2S = (
    "local t = redis.call('TIME') local t0 = t[1] * 1000000 + t[2] "
    "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - t0 > 2000000 return 1"
)
"""A script that holds its server for 2 s: a MULTI's reply that comes too late."""


async def test_a_multi_whose_reply_is_lost_is_not_sent_again(cluster: Cluster) -> None:
    """The dispatcher publishes with a MULTI of plain commands (RPUSH of the task ids): if
    the slot's connection resent it after a lost reply, an EXEC that did run would run
    twice. SlotConnection raises instead, and the dispatcher probes before resending."""
    url = cluster.cluster_url
    key = "meetq:{multi-q}:probe-list"
    conn = await SlotConnection.connect(url, key_slot(key), timeout=5.0, reply_timeout=0.2)
    check = await SlotConnection.connect(url, key_slot(key), timeout=5.0)
    try:
        with pytest.raises(MeetqConnectionError):
            await conn.execute_many(
                [("MULTI",), ("RPUSH", key, "once"), ("EVAL", BUSY_2S, 0), ("EXEC",)]
            )
        assert await check.execute("LLEN", key) == 1  # waits for the script to end
        assert await conn.execute("LLEN", key) == 1  # the connection finds its server anew
    finally:
        await check.execute("DEL", key)
        await conn.close()
        await check.close()


async def test_timeout_when_no_worker(cluster: Cluster) -> None:
    queue = "unserved-q"
    async with TaskDispatcher(cluster.cluster_url, routes=[route(queue)]) as d:
        final = await d.dispatch_and_wait(TaskRequest(type=f"echo-{queue}", timeout=0.5))
        assert final.status is TaskStatus.TIMEOUT
        _, status = await d.get_task_status(final.task_id)
        assert status is TaskStatus.TIMEOUT
        assert d.get_stats()["total_timeout"] == 1


async def test_failure_retries_then_goes_to_the_dlq(cluster: Cluster) -> None:
    url = cluster.cluster_url
    queue = queues_on_every_shard(cluster, "dlq-q")[1]
    w = worker(url, queue)
    await w.start()
    try:
        async with TaskDispatcher(url, routes=[route(queue)]) as d:
            final = await d.dispatch_and_wait(
                TaskRequest(type=f"boom-{queue}", max_retries=2, timeout=20)
            )
            assert final.status is TaskStatus.FAILED
            assert "handler exploded" in (final.error or "")
            _, status = await d.get_task_status(final.task_id)
            assert status is TaskStatus.FAILED
        stats = await w.get_stats()
        assert stats["total_dead_letter"] == 1 and stats["total_retried"] == 2
        assert stats["total_failed"] == 3
        assert await w.queue.dead_letter_count() == 1
    finally:
        await w.stop()


async def test_cancel_of_a_running_task_reaches_its_worker(cluster: Cluster) -> None:
    """The cancel poke (PUBLISH from task_cancel.lua) reaches a worker on a cluster: the
    sweep is set far beyond the wait, so only the poke can stop the handler in time."""
    url = cluster.cluster_url
    queue = queues_on_every_shard(cluster, "cancel-q")[2]
    w = worker(url, queue, cancel_check_interval=60.0)
    await w.start()

    async def subscribed() -> bool:  # the worker hears the queue's cancel channel
        channel = QueueKeys(queue).cancel_channel
        for port in cluster.masters():
            out = await asyncio.to_thread(cli, port, "PUBSUB", "NUMSUB", channel)
            if out.split()[-1] != "0":
                return True
        return False

    try:
        await async_wait_until(subscribed, timeout=20, interval=0.05)
        async with TaskDispatcher(url, routes=[route(queue)]) as d:
            req = TaskRequest(type=f"hang-{queue}", timeout=60)
            waiting = asyncio.ensure_future(d.dispatch_and_wait(req))
            await async_wait_until(lambda: bool(w._running), timeout=20)
            assert await d.cancel_task(req.id)
            final = await asyncio.wait_for(waiting, 20)
            assert final.status is TaskStatus.CANCELLED
            await async_wait_until(lambda: w.cancelled_running == 1, timeout=20)
            assert not w._running
    finally:
        await w.stop()


async def test_client_task_manager_session(cluster: Cluster) -> None:
    """The seed's default routes on a cluster: an ai.* client request through a session."""
    url = cluster.cluster_url
    ai = ServiceWorker(url, "ai-service", retry_backoff=0.01)
    ai.register_handler(
        TaskType.SPEECH_RECOGNITION, lambda req: {"text": req.payload["audio"], "u": req.user_id}
    )

    async def slow(req: TaskRequest) -> dict[str, Any]:
        await asyncio.sleep(5.0)  # a handler past the request's timeout
        return {}

    ai.register_handler(TaskType.EMOTION_DETECTION, slow)
    await ai.start()
    try:
        async with TaskDispatcher(url) as d, ClientTaskManager(d) as m:
            m.register_session("sess-c", user_id=5, meeting_id=6)
            ok = await m.submit_task(
                ClientTaskRequest(
                    type="ai.speech_recognition",
                    session_id="sess-c",
                    data={"audio": "hello"},
                    priority="high",
                    timeout=20,
                    request_id="r1",
                )
            )
            assert ok.status == "success" and ok.data == {"text": "hello", "u": 5}
            late = await m.submit_task(
                ClientTaskRequest(type="ai.emotion_detection", session_id="sess-c", timeout=0.3)
            )
            assert late.status == "timeout"
            stats = m.get_stats()
            assert stats["total_requests"] == 2 and stats["total_success"] == 1
            assert stats["active_sessions"] == 1
            assert m.unregister_session("sess-c")
    finally:
        await ai.stop()


async def test_failover_of_a_busy_services_master() -> None:
    """SIGKILL the master of a busy service's slot while tasks flow: after the promotion
    dispatching resumes without a restart, and every task resolves exactly once (completed,
    or failed/timeout with a reason)."""
    with running_cluster("--appendonly", "yes", "--appendfsync", "always") as cluster:
        url = cluster.cluster_url
        queue = "busy-q"
        slot = slot_of(queue)
        outcomes: collections.Counter[str] = collections.Counter()
        finals: dict[str, TaskResponse] = {}
        sent: list[str] = []
        refused: list[BaseException] = []
        killed = asyncio.Event()

        def done(resp: TaskResponse) -> None:
            outcomes[resp.task_id] += 1
            finals[resp.task_id] = resp

        w = worker(url, queue, workers=8, visibility_timeout=3.0)
        await w.start()
        try:
            async with TaskDispatcher(url, routes=[route(queue)], retry_budget=30.0) as d:

                async def dispatch_steadily(total: int) -> None:
                    for i in range(total):
                        req = TaskRequest(type=f"echo-{queue}", payload={"i": i}, timeout=20)
                        try:
                            await d.dispatch_async(req, done)
                            sent.append(req.id)
                        except MeetqError as exc:  # refused: never dispatched, no callback
                            refused.append(exc)
                        if i == total // 3:
                            killed.set()
                        await asyncio.sleep(0.005)  # a steady offered rate, not a sync

                producing = asyncio.ensure_future(dispatch_steadily(300))
                try:
                    await killed.wait()
                    dead = await asyncio.to_thread(cluster.kill_master_of, slot)
                    await asyncio.to_thread(cluster.wait_promoted, slot, dead)
                    await asyncio.wait_for(producing, timeout=90)
                finally:
                    producing.cancel()
                await async_wait_until(lambda: set(finals) >= set(sent), timeout=60)
                # dispatching resumed on the promoted replica
                after = await d.dispatch_and_wait(TaskRequest(type=f"echo-{queue}", timeout=20))
                assert after.status is TaskStatus.COMPLETED
                assert d.get_stats()["active_tasks"] == 0
        finally:
            await w.stop()
        assert len(sent) + len(refused) == 300 and len(sent) >= 200
        assert all(n == 1 for n in outcomes.values()), "a task resolved twice"
        assert set(outcomes) == set(sent)
        for tid in sent:
            final = finals[tid]
            assert final.status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT)
            if final.status is not TaskStatus.COMPLETED:
                assert final.error, final
        completed = sum(f.status is TaskStatus.COMPLETED for f in finals.values())
        assert completed >= len(sent) // 2
