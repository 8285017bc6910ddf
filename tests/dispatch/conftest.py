"""Fixtures of the dispatch tests: a ServiceWorker in its own process, the tests' route."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import script_process
from meetq import ServiceRoute

WORKER = Path(__file__).parent / "task_worker.py"
TEST_QUEUE = "test_tasks"
LOG_KEY = "test:log"
TEST_TYPES = ["echo", "boom", "slow", "hang", "record"]


@pytest.fixture
def route() -> ServiceRoute:
    """The tests' route: the worker script's task types on TEST_QUEUE."""
    return ServiceRoute("test-service", TEST_QUEUE, list(TEST_TYPES))


def worker_process(url: str, queue: str = TEST_QUEUE) -> contextlib.AbstractContextManager[Any]:
    """A ServiceWorker subprocess, once it is ready; always stopped."""
    return script_process(WORKER, url, queue, LOG_KEY)


@pytest.fixture
def task_worker() -> Iterator[Callable[..., Any]]:
    """Starts worker processes on demand (url[, queue]); stops them all at the end."""
    with contextlib.ExitStack() as stack:
        yield lambda url, queue=TEST_QUEUE: stack.enter_context(worker_process(url, queue))
