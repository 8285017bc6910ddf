"""Fixtures of the dispatch tests: a ServiceWorker in its own process, the tests' route."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meetq import ServiceRoute

WORKER = Path(__file__).parent / "task_worker.py"
TEST_QUEUE = "test_tasks"
LOG_KEY = "test:log"
TEST_TYPES = ["echo", "boom", "slow", "hang", "record"]


@pytest.fixture
def route() -> ServiceRoute:
    """The tests' route: the worker script's task types on TEST_QUEUE."""
    return ServiceRoute("test-service", TEST_QUEUE, list(TEST_TYPES))


@contextlib.contextmanager
def worker_process(url: str, queue: str = TEST_QUEUE) -> Iterator[subprocess.Popen[bytes]]:
    """A ServiceWorker subprocess, waited for until it prints "ready"; always reaped."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), url, queue, LOG_KEY],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 60)
        assert readable, "worker did not start within 60 s"
        line = proc.stdout.readline()
        assert line.strip() == b"ready", line
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def task_worker() -> Iterator[Callable[..., Any]]:
    """Starts worker processes on demand (url[, queue]); stops them all at the end."""
    with contextlib.ExitStack() as stack:
        yield lambda url, queue=TEST_QUEUE: stack.enter_context(worker_process(url, queue))


async def _queue_writes_status(url: str) -> bool:
    """Probes whether the queue implements CONTRACTS.md section 4 (final status written
    with the ack): dispatch one task to an in-process worker and read its status hash."""
    import asyncio

    import redis.asyncio

    from meetq import ServiceWorker, TaskDispatcher, TaskRequest

    route = ServiceRoute("probe-service", "probe_tasks", ["probe"])
    worker = ServiceWorker(url, "probe-service", queue_name="probe_tasks")
    worker.register_handler("probe", lambda req: {})
    r = redis.asyncio.Redis.from_url(url)
    try:
        async with worker, TaskDispatcher(url, routes=[route]) as d:
            final = await asyncio.wait_for(d.dispatch_and_wait(TaskRequest(type="probe")), 30)
            status = await r.hget(f"meetq:{{probe_tasks}}:status:{final.task_id}", "status")
            return bool(status == b"completed")
    finally:
        await r.aclose()


@pytest.fixture(scope="session")
def queue_has_section4() -> bool:
    import asyncio

    import uvloop

    from helpers import running_redis

    with running_redis() as server, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_queue_writes_status(server.url))


@pytest.fixture
def section4(queue_has_section4: bool) -> None:
    """Skips a test that needs the queue's side of CONTRACTS.md section 4 until it is on
    main (queue-reliability): status written with the ack, cancelled/expired dropped at
    dequeue."""
    if not queue_has_section4:
        pytest.skip("the queue does not implement CONTRACTS.md section 4 yet")
