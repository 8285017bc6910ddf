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
