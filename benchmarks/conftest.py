"""Fixtures of the benchmarks: one private redis-server per benchmark module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import RedisServer, running_redis


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with running_redis() as srv:
        yield srv
