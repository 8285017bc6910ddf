"""Fixtures of the gateway tests: the services in their own process, a live gateway."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import script_process
from meetq import TaskDispatcher
from meetq.gateway import ClientTaskManager, HmacAuthenticator, make_token
from meetq.gateway.server import GatewayConfig, GatewayServer

sys.path.insert(0, str(Path(__file__).parent))  # test_accepted.py uses test_server's helpers

WORKER = Path(__file__).parent / "gateway_worker.py"
SECRET = "test-secret-0123456789abcdef"


@pytest.fixture
def services(redis_url: str) -> Iterator[subprocess.Popen[bytes]]:
    with script_process(WORKER, redis_url) as proc:
        yield proc


@dataclass
class Stack:
    gateway: GatewayServer
    manager: ClientTaskManager
    dispatcher: TaskDispatcher

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}/"

    def url(self, user_id: int = 1, meeting_id: int = 2, ttl: float = 600, **query: str) -> str:
        token = make_token(SECRET, user_id, meeting_id, ttl=ttl)
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"{self.base}?token={token}{extra}"


@contextlib.asynccontextmanager
async def gateway_stack(
    redis_url: str, manager_options: dict[str, Any] | None = None, **config: Any
) -> AsyncIterator[Stack]:
    cfg = GatewayConfig(port=0, **config)
    async with (
        TaskDispatcher(redis_url) as dispatcher,
        ClientTaskManager(dispatcher, **(manager_options or {})) as manager,
        GatewayServer(manager, HmacAuthenticator(SECRET), cfg) as gateway,
    ):
        yield Stack(gateway, manager, dispatcher)


@pytest.fixture
def stack_factory(redis_url: str) -> Callable[..., Any]:
    return lambda **kw: gateway_stack(redis_url, **kw)
