"""Shared fixtures: a real redis-server per test, async tests on uvloop, deadline polls.

Async tests are plain `async def` functions; the hook below runs each on a fresh uvloop
loop, so no pytest-asyncio configuration is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

import meetq
from helpers import RedisServer, running_redis


def pytest_report_header() -> list[str]:
    return [f"meetq backend: {meetq.backend()} ({Path(meetq.__file__).parent})"]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=120))
    return True


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test (no persistence), stopped even when the test fails."""
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Starts servers with extra redis-server arguments (e.g. persistence); stops them all."""
    with contextlib.ExitStack() as stack:
        yield lambda *extra: stack.enter_context(running_redis(*extra))


@pytest.fixture(autouse=True, scope="session")
def _the_meetq_under_test() -> None:
    """The run tests what it says: the asked-for backend, from the installed wheel."""
    wanted = os.environ.get("MEETQ_BACKEND")
    if wanted in ("native", "pure"):
        assert meetq.backend() == wanted, f"asked for {wanted}, running {meetq.backend()}"
    if os.environ.get("MEETQ_EXPECT_INSTALLED"):
        assert "site-packages" in meetq.__file__, f"testing a source tree: {meetq.__file__}"
