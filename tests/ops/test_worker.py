"""`meetq worker MODULE:ATTR` as a real process: runs the module's handlers, stops on
SIGTERM without losing the message it was running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from clirun import meetq, one_line_error, write_module

from helpers import RedisServer, async_wait_until, redis_client
from meetq import Message, RedisMessageQueue
from meetq.ops.common import EXIT_MISSING, EXIT_USAGE, CliError
from meetq.ops.worker import load_settings

TASKS = """
import asyncio, pathlib

MARK = pathlib.Path({mark!r})

def greet(msg):
    return {{"hello": msg.payload["name"]}}

async def slow(msg):
    MARK.write_text("started")
    await asyncio.sleep(float(msg.payload["seconds"]))
    MARK.write_text("finished")
    return {{"slept": msg.payload["seconds"]}}

settings = {{
    "queue": {queue!r},
    "handlers": {{"greet": greet, "slow": slow}},
    "workers": 2,
    "queue_options": {{"stop_grace": 20.0}},
}}

class Bad:
    queue = ""
    handlers = {{}}
"""


@contextlib.asynccontextmanager
async def publisher(url: str, name: str) -> AsyncIterator[RedisMessageQueue]:
    """A queue instance that is never started: it publishes and reads stats, and takes
    no message away from the worker under test."""
    q = RedisMessageQueue(url, name)
    try:
        yield q
    finally:
        await q.stop()


def _spawn(tmp_path: Path, url: str, target: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "meetq", "--redis-url", url, "worker", target, *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_worker_runs_handlers_and_stops_gracefully_on_sigterm(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    mark = tmp_path / "mark"
    write_module(tmp_path, "mytasks", TASKS.format(mark=str(mark), queue="work"))
    proc = _spawn(tmp_path, redis_server.url, "mytasks:settings")
    try:
        async with publisher(redis_server.url, "work") as q:
            await q.publish(Message(type="greet", payload={"name": "ada"}))
            await async_wait_until(lambda: _stat(q, "total_processed", 1), timeout=30)
            await q.publish(Message(type="slow", payload={"seconds": 1.5}))
            await async_wait_until(lambda: mark.exists(), timeout=30)
            proc.send_signal(signal.SIGTERM)
            # graceful: the running handler finishes, its ack is written, exit 0
            assert proc.wait(30) == 0
            assert mark.read_text() == "finished"
            stats = await q.get_stats()
            assert stats["total_processed"] == 2
            assert stats["processing_count"] == 0 and stats["queue_length"]["total"] == 0
        err = proc.stderr.read() if proc.stderr else ""
        assert "stopping (SIGTERM)" in err and "worker stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sigterm_hands_back_messages_not_started(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    mark = tmp_path / "mark"
    write_module(tmp_path, "handback", TASKS.format(mark=str(mark), queue="hb"))
    proc = _spawn(tmp_path, redis_server.url, "handback", "--workers", "1")
    try:
        async with publisher(redis_server.url, "hb") as q:
            await q.publish(Message(type="slow", payload={"seconds": 1.0}))
            await async_wait_until(lambda: mark.exists(), timeout=30)
            await q.publish_batch(
                [Message(type="slow", payload={"seconds": 1.0}) for _ in range(3)]
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            stats = await q.get_stats()
            # nothing lost: every message is processed or back in ready, none leased
            assert stats["processing_count"] == 0
            assert stats["total_processed"] + stats["queue_length"]["total"] == 4
            assert stats["total_processed"] >= 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _stat(q: RedisMessageQueue, key: str, at_least: int) -> bool:
    return bool((await q.get_stats())[key] >= at_least)


def test_worker_serves_metrics_with_handler_latency(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from helpers import free_port, wait_until

    mark = tmp_path / "mark"
    write_module(tmp_path, "mtasks", TASKS.format(mark=str(mark), queue="mq"))
    port = free_port()
    proc = _spawn(tmp_path, redis_server.url, "mtasks", "--metrics-port", str(port))
    try:
        import asyncio

        async def publish() -> None:
            async with publisher(redis_server.url, "mq") as q:
                await q.publish_batch(
                    [Message(type="greet", payload={"name": "x"}) for _ in range(5)]
                )

        asyncio.run(publish())

        def scrape() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text: str = r.read().decode()
            except OSError:
                return None
            return (
                text
                if 'meetq_handler_duration_seconds_count{queue="mq",type="greet"} 5.0' in text
                else None
            )

        text = wait_until(scrape, timeout=30, interval=0.1)
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"meetq_handler_duration_seconds", "meetq_queue_processed"} <= names
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_bad_targets_are_clear_errors(tmp_path: Path, redis_server: RedisServer) -> None:
    write_module(tmp_path, "badtasks", TASKS.format(mark="x", queue="q"))
    env = {"PYTHONPATH": str(tmp_path)}
    missing = meetq("--redis-url", redis_server.url, "worker", "no_such_module_xyz:settings")
    assert missing.returncode == EXIT_MISSING
    assert "cannot import 'no_such_module_xyz'" in one_line_error(missing)
    noattr = meetq("--redis-url", redis_server.url, "worker", "badtasks:nothing", env=env)
    assert noattr.returncode == EXIT_USAGE and "no attribute" in one_line_error(noattr)
    bad = meetq("--redis-url", redis_server.url, "worker", "badtasks:Bad", env=env)
    assert bad.returncode == EXIT_USAGE and "`queue`" in one_line_error(bad)


def test_load_settings_accepts_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(
        tmp_path,
        "objtasks",
        "class settings:\n    queue = 'q1'\n    handlers = {'a': print}\n    in_thread = ['a']\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    s = load_settings("objtasks")
    assert s.queue == "q1" and s.in_thread == frozenset({"a"}) and s.workers == 4
    with pytest.raises(CliError) as exc:
        load_settings(":x")
    assert exc.value.code == EXIT_USAGE


async def test_unix_socket_url_works_for_the_worker(tmp_path: Path) -> None:
    from meetq.ops.redis_server import private_redis

    mark = tmp_path / "mark"
    write_module(tmp_path, "utasks", TASKS.format(mark=str(mark), queue="uq"))
    with private_redis() as url:
        proc = _spawn(tmp_path, url, "utasks")
        try:
            async with redis_client(url) as r:
                q = RedisMessageQueue(r, "uq")
                await q.publish(Message(type="greet", payload={"name": "u"}))
                await async_wait_until(lambda: _stat(q, "total_processed", 1), timeout=30)
                await q.stop()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
