"""TaskDispatcher end to end: a real redis-server, the ServiceWorker in its own process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from helpers import async_wait_until, redis_client
from meetq import (
    DispatcherStoppedError,
    MeetqConnectionError,
    Priority,
    ServiceRoute,
    TaskDispatcher,
    TaskNotFoundError,
    TaskRequest,
    TaskResponse,
    TaskStatus,
)
from meetq._redis.keys import QueueKeys
from meetq.dispatch.status import decode_body, done_key

QUEUE = "test_tasks"
LOG_KEY = "test:log"


async def recorded(r: Any, tid: str) -> dict[str, Any] | None:
    """The outcome Redis recorded for `tid` (its reply object in its done hash), if any."""
    raw = await r.hget(done_key(tid), tid)
    return None if raw is None else dict(orjson.loads(raw))


def dispatcher(url: str, route: ServiceRoute, **kw: Any) -> TaskDispatcher:
    return TaskDispatcher(url, routes=[route], **kw)


async def test_result_comes_back_and_status_is_readable_elsewhere(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    task_worker(redis_url)
    async with dispatcher(redis_url, route) as d:
        req = TaskRequest(
            type="echo",
            payload={"x": 1},
            priority=Priority.HIGH,
            user_id=7,
            meeting_id=9,
            session_id="s",
            timeout=20,
        )
        final = await d.dispatch_and_wait(req)
        assert final.status is TaskStatus.COMPLETED
        assert final.result == {"echo": {"x": 1}, "user_id": 7}
        assert final.error is None
        assert final.task_id == req.id and req.id.endswith("@" + QUEUE)
        assert final.duration > 0
        stats = d.get_stats()
        assert stats["total_dispatched"] == 1 and stats["total_completed"] == 1
        assert stats["active_tasks"] == 0
    # another process reads the status from Redis alone
    code = (
        "import asyncio, sys, meetq\n"
        "async def main():\n"
        "    async with meetq.TaskDispatcher(sys.argv[1]) as d:\n"
        "        req, st = await d.get_task_status(sys.argv[2])\n"
        "        print(req.type, req.user_id, req.meeting_id, req.payload['x'], st.value)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, redis_url, req.id, stdout=subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert stdout.split() == [b"echo", b"7", b"9", b"1", b"completed"]


async def test_failure_retries_then_fails(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    task_worker(redis_url)
    async with dispatcher(redis_url, route) as d:
        final = await d.dispatch_and_wait(TaskRequest(type="boom", max_retries=2, timeout=20))
        assert final.status is TaskStatus.FAILED
        assert "handler exploded" in (final.error or "")
        assert d.get_stats()["total_failed"] == 1


async def test_dispatch_async_callback_runs_once(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    task_worker(redis_url)
    seen: list[TaskResponse] = []
    done = asyncio.Event()

    async def callback(resp: TaskResponse) -> None:
        seen.append(resp)
        if len(seen) == 50:
            done.set()

    async with dispatcher(redis_url, route) as d:
        pending = [
            await d.dispatch_async(TaskRequest(type="echo", payload={"i": i}), callback)
            for i in range(50)
        ]
        assert all(p.status is TaskStatus.PENDING for p in pending)
        await asyncio.wait_for(done.wait(), 30)
        assert sorted(r.result["echo"]["i"] for r in seen if r.result) == list(range(50))
        assert {r.task_id for r in seen} == {p.task_id for p in pending}


async def test_batch_is_one_round_trip(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        await r.config_resetstat()
        reqs = [TaskRequest(type="echo", payload={"i": i}) for i in range(200)]
        responses = await d.dispatch_batch(reqs)
        info = await r.info("commandstats")
        assert info["cmdstat_exec"]["calls"] == 1
        assert info["cmdstat_multi"]["calls"] == 1
        assert len(responses) == 200
        assert await r.llen(QueueKeys(QUEUE).ready(1)) == 200
        done: list[TaskResponse] = []
        for resp in responses:
            assert (await d.get_task_status(resp.task_id))[1] is TaskStatus.PENDING
        task_worker(redis_url)
        await async_wait_until(lambda: d.get_stats()["total_completed"] == 200, timeout=60)
        assert d.get_stats()["active_tasks"] == 0
        del done


async def test_timeout_when_no_worker(redis_url: str, route: ServiceRoute) -> None:
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        final = await d.dispatch_and_wait(TaskRequest(type="echo", timeout=0.3))
        assert final.status is TaskStatus.TIMEOUT
        assert (await recorded(r, final.task_id) or {}).get("status") == "timeout"
        assert (await d.get_task_status(final.task_id))[1] is TaskStatus.TIMEOUT
        assert d.get_stats()["total_timeout"] == 1


async def test_late_result_after_timeout_fires_nothing_twice(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    task_worker(redis_url)
    calls: list[TaskResponse] = []
    async with dispatcher(redis_url, route) as d:
        await d.dispatch_async(
            TaskRequest(type="slow", payload={"sleep": 1.0}, timeout=0.3), calls.append
        )
        await async_wait_until(lambda: calls, timeout=20)
        assert calls[0].status is TaskStatus.TIMEOUT
        # the worker still finishes and replies; the reply is counted, not delivered
        await async_wait_until(lambda: d.get_stats()["late_replies"] == 1, timeout=20)
        assert len(calls) == 1
        assert (await d.get_task_status(calls[0].task_id))[1] is TaskStatus.TIMEOUT


async def test_cancel_running_task_cancels_it_in_the_worker(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    task_worker(redis_url)
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        waiter = asyncio.ensure_future(d.dispatch_and_wait(TaskRequest(type="hang", timeout=30)))
        started = await async_wait_until(lambda: r.lrange(LOG_KEY, 0, -1), timeout=20)
        tid = started[0].decode().split(":", 1)[1]
        # running: nothing is recorded yet, the lease says processing
        assert await recorded(r, tid) is None
        assert (await d.get_task_status(tid))[1] is TaskStatus.PROCESSING
        assert await d.cancel_task(tid)
        final = await asyncio.wait_for(waiter, 10)
        assert final.status is TaskStatus.CANCELLED
        await async_wait_until(lambda: _has(r, f"cancelled:{tid}"), timeout=20)
        assert not await d.cancel_task(tid)  # already final
        assert (await d.get_task_status(tid))[1] is TaskStatus.CANCELLED


async def _has(r: Any, entry: str) -> bool:
    return entry.encode() in await r.lrange(LOG_KEY, 0, -1)


async def test_cancel_from_another_dispatcher_reaches_the_owner(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    task_worker(redis_url)
    async with dispatcher(redis_url, route) as owner, dispatcher(redis_url, route) as other:
        waiter = asyncio.ensure_future(
            owner.dispatch_and_wait(TaskRequest(type="hang", timeout=30))
        )
        await async_wait_until(lambda: owner.get_stats()["active_tasks"] == 1)
        tid = next(iter(owner._pending))
        assert await other.cancel_task(tid)
        final = await asyncio.wait_for(waiter, 10)
        assert final.status is TaskStatus.CANCELLED
        assert owner.get_stats()["total_cancelled"] == 1


async def test_unknown_task_and_cancel_of_unknown(redis_url: str, route: ServiceRoute) -> None:
    async with dispatcher(redis_url, route) as d:
        with pytest.raises(TaskNotFoundError):
            await d.get_task_status("nope@" + QUEUE)
        with pytest.raises(TaskNotFoundError):
            await d.get_task_status("nope.1700000000@" + QUEUE)  # well formed, never sent
        with pytest.raises(TaskNotFoundError):
            await d.get_task_status("no-queue-here")
        assert not await d.cancel_task("nope@" + QUEUE)
        assert not await d.cancel_task("nope.1700000000@" + QUEUE)


async def test_stopping_dispatcher_fails_its_waiters_tasks_go_on(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    d = dispatcher(redis_url, route, stop_grace=0.2)
    await d.start()
    waiter = asyncio.ensure_future(
        d.dispatch_and_wait(TaskRequest(type="slow", payload={"sleep": 0.5}, timeout=30))
    )
    await async_wait_until(lambda: d.get_stats()["active_tasks"] == 1)
    tid = next(iter(d._pending))
    await d.stop()
    with pytest.raises(DispatcherStoppedError):
        await waiter
    # a new dispatcher (a restarted process) sees the task end in Redis
    task_worker(redis_url)
    async with dispatcher(redis_url, route) as d2:

        async def done() -> bool:
            return (await d2.get_task_status(tid))[1] is TaskStatus.COMPLETED

        await async_wait_until(done, timeout=30)


async def test_redis_restart_ends_every_waiter(redis_server: Any, route: ServiceRoute) -> None:
    url = redis_server.url
    async with dispatcher(url, route) as d:
        waiters = [
            asyncio.ensure_future(d.dispatch_and_wait(TaskRequest(type="echo", timeout=1.5)))
            for _ in range(10)
        ]
        await async_wait_until(lambda: d.get_stats()["total_dispatched"] == 10)
        redis_server.restart()  # no persistence: the tasks are gone
        finals = await asyncio.wait_for(asyncio.gather(*waiters), 30)
        assert {f.status for f in finals} == {TaskStatus.TIMEOUT}
        # and the dispatcher works again on the restarted server
        final = await d.dispatch_and_wait(TaskRequest(type="echo", timeout=0.5))
        assert final.status is TaskStatus.TIMEOUT
        async with redis_client(url) as r:
            assert (await recorded(r, final.task_id) or {}).get("status") == "timeout"


async def test_a_pending_task_is_its_stored_body_and_no_key_of_its_own(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        keys = QueueKeys(QUEUE)
        resp = await d.dispatch(TaskRequest(type="echo", payload={"k": "v"}, timeout=60))
        msg = decode_body(await r.hget(keys.named("msg"), resp.task_id))
        assert msg.payload["payload"] == {"k": "v"} and msg.payload["id"] == resp.task_id
        assert msg.reply_to == keys.reply(d.name)
        server_now = float((await r.time())[0])
        assert server_now + 55 < msg.expires_at <= server_now + 61
        assert resp.task_id.endswith(f".{int(msg.expires_at)}@{QUEUE}")
        # the queue's own keys and nothing per task
        fixed = {keys.named(n).encode() for n in ("msg", "stats", "wake")} | {
            keys.ready(p).encode() for p in range(4)
        }
        assert set(await r.keys("*")) <= fixed
        # finished: recorded in the done hash of its deadline's second, with the request
        task_worker(redis_url)
        await async_wait_until(lambda: recorded(r, resp.task_id), timeout=30)
        record = await recorded(r, resp.task_id)
        assert record is not None and record["status"] == "completed"
        kept = decode_body(await r.hget(done_key(resp.task_id), resp.task_id + "\0r"))
        assert kept.payload["payload"] == {"k": "v"}
        assert await r.hget(keys.named("msg"), resp.task_id) is None
        ttl_ms = await r.pttl(done_key(resp.task_id))
        left_s = int(msg.expires_at) + 1 + 3600 - server_now
        assert (left_s - 70) * 1000 < ttl_ms <= left_s * 1000
        req, status = await d.get_task_status(resp.task_id)
        assert status is TaskStatus.COMPLETED and req.payload == {"k": "v"}


async def test_cancelled_pending_task_never_runs(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        waiter = asyncio.ensure_future(d.dispatch_and_wait(TaskRequest(type="record")))
        await async_wait_until(lambda: d.get_stats()["active_tasks"] == 1)
        tid = next(iter(d._pending))
        assert await d.cancel_task(tid)
        assert (await waiter).status is TaskStatus.CANCELLED
        task_worker(redis_url)  # starts after the cancel: must drop the task at dequeue
        marker = await d.dispatch_and_wait(TaskRequest(type="record", timeout=30))
        assert marker.status is TaskStatus.COMPLETED
        ran = await r.lrange(LOG_KEY, 0, -1)
        assert f"ran:{marker.task_id}".encode() in ran
        assert f"ran:{tid}".encode() not in ran
        assert (await d.get_task_status(tid))[1] is TaskStatus.CANCELLED


async def test_expired_task_is_dropped_by_the_worker(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        expired = await d.dispatch_and_wait(TaskRequest(type="record", timeout=0.2))
        assert expired.status is TaskStatus.TIMEOUT
        task_worker(redis_url)
        marker = await d.dispatch_and_wait(TaskRequest(type="record", timeout=30))
        assert marker.status is TaskStatus.COMPLETED
        ran = await r.lrange(LOG_KEY, 0, -1)
        assert f"ran:{expired.task_id}".encode() not in ran


async def test_dispatches_of_one_loop_turn_share_one_multi(
    redis_url: str, route: ServiceRoute
) -> None:
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        await r.config_resetstat()
        responses = await asyncio.gather(
            *(d.dispatch(TaskRequest(type="echo", payload={"i": i})) for i in range(50))
        )
        info = await r.info("commandstats")
        assert info["cmdstat_exec"]["calls"] == 1
        assert len({resp.task_id for resp in responses}) == 50
        assert await r.llen(QueueKeys(QUEUE).ready(1)) == 50
        assert d.get_stats()["publishes"] == 1 and d.get_stats()["total_dispatched"] == 50


async def test_a_refused_call_stages_nothing(redis_url: str, route: ServiceRoute) -> None:
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        good = asyncio.ensure_future(d.dispatch(TaskRequest(type="echo")))
        with pytest.raises(ValueError):
            await d.dispatch(TaskRequest(type="echo", timeout=0))
        await good
        assert await r.llen(QueueKeys(QUEUE).ready(1)) == 1
        assert d.get_stats()["active_tasks"] == 1


async def test_submit_stages_without_a_task_and_resolves_once(
    redis_url: str, route: ServiceRoute, task_worker: Callable[..., Any]
) -> None:
    task_worker(redis_url)
    seen: dict[str, list[TaskResponse]] = {}
    failures: list[BaseException] = []
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        await r.config_resetstat()
        # called from a plain loop callback (as the gateway's frame callbacks are): no
        # Task around it, and the 40 calls of that turn share one MULTI
        ids: list[str] = []

        def burst() -> None:
            for i in range(40):
                req = TaskRequest(type="echo", payload={"i": i}, timeout=20)
                tid = d.submit(
                    req,
                    lambda resp: seen.setdefault(resp.task_id, []).append(resp),
                    failures.append,
                )
                ids.append(tid)

        asyncio.get_running_loop().call_soon(burst)
        await async_wait_until(lambda: len(seen) == 40, timeout=30)
        assert set(seen) == set(ids) and all(len(v) == 1 for v in seen.values())
        assert all(v[0].status is TaskStatus.COMPLETED for v in seen.values())
        assert sorted(v[0].result["echo"]["i"] for v in seen.values()) == list(range(40))
        info = await r.info("commandstats")
        assert info["cmdstat_exec"]["calls"] == 1
        assert failures == [] and d.get_stats()["active_tasks"] == 0
        with pytest.raises(ValueError):
            d.submit(TaskRequest(type="echo", timeout=0), seen.clear, failures.append)
        assert d.get_stats()["active_tasks"] == 0


async def test_submit_whose_write_fails_calls_on_failed_only(
    redis_server: Any, route: ServiceRoute
) -> None:
    outcomes: list[TaskResponse] = []
    failures: list[BaseException] = []
    async with dispatcher(redis_server.url, route, retry_budget=0.5) as d:
        redis_server.stop()
        try:
            d.submit(TaskRequest(type="echo", timeout=5), outcomes.append, failures.append)
            await async_wait_until(lambda: failures, timeout=30)
            assert isinstance(failures[0], MeetqConnectionError)
            assert d.get_stats()["active_tasks"] == 0 and outcomes == []
        finally:
            redis_server.start()


async def test_a_cancelled_caller_does_not_cancel_the_others_of_its_turn(
    redis_url: str, route: ServiceRoute
) -> None:
    """Calls of one loop turn await one shared MULTI outcome: cancelling one caller must
    not cancel it for the others (the staged tasks are all published)."""
    async with redis_client(redis_url) as r, dispatcher(redis_url, route) as d:
        calls = [
            asyncio.ensure_future(d.dispatch(TaskRequest(type="record", timeout=30)))
            for _ in range(3)
        ]
        await asyncio.sleep(0)  # one loop turn: each call stages its task, awaits the MULTI
        calls[1].cancel()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert all(isinstance(x, TaskResponse) for x in (done[0], done[2]))
        assert d.get_stats()["total_dispatched"] == 3
        assert await r.llen(QueueKeys(QUEUE).ready(1)) == 3
