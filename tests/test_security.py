"""Security rules that hold across the package: no pickle, no secret in any log line,
a loud warning when Redis may evict meetq's keys."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

import meetq
from helpers import RedisServer, async_wait_until
from meetq import Message, RedisMessageQueue

PACKAGE = Path(meetq.__file__).parent


def test_no_module_imports_pickle() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle") for n in names):
                offenders.append(str(path))
    assert offenders == []


async def test_the_password_never_reaches_a_log_line(
    redis_factory: object, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-Pa55-word-42"
    server: RedisServer = redis_factory("--requirepass", secret)  # type: ignore[operator]
    url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
    caplog.set_level(logging.DEBUG, logger="meetq")
    done: list[str] = []

    def flaky(m: Message) -> None:
        if m.retry_count == 0:
            raise RuntimeError(f"first attempt fails (url was {url.replace(secret, '***')})")
        done.append(m.id)

    q = RedisMessageQueue(url, "secret-q", workers=1, retry_backoff=0.01)
    q.register_handler("t", flaky)
    async with q:
        await q.publish(Message(type="t", payload={}, max_retries=1))
        await async_wait_until(lambda: done, timeout=30)
        server.restart()  # connection errors and reconnects get logged too
        await q.publish(Message(type="t", payload={}, max_retries=1))
        await async_wait_until(lambda: len(done) == 2, timeout=60)
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records) + caplog.text
    assert caplog.records, "the run logged nothing: the check would prove nothing"
    assert secret not in text


async def test_an_evicting_maxmemory_policy_is_warned_about(
    redis_factory: object, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = redis_factory("--maxmemory-policy", "allkeys-lru")  # type: ignore[operator]
    q = RedisMessageQueue(server.url, "evict-q")
    with caplog.at_level(logging.WARNING, logger="meetq"):
        async with q:
            pass
    assert any("allkeys-lru" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)  # fmt: skip
    caplog.clear()
    safe: RedisServer = redis_factory()  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="meetq"):
        async with RedisMessageQueue(safe.url, "evict-q"):
            pass
    assert not any("maxmemory-policy" in r.getMessage() for r in caplog.records)
