"""The Reader's drain against real ZMQ sockets (ipc in a temp dir)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

zmq = pytest.importorskip("zmq")

from helpers import async_wait_until  # noqa: E402
from meetq.ai.reactor import Reader  # noqa: E402


async def test_a_handler_that_closes_its_reader_ends_the_drain_cleanly(tmp_path: Path) -> None:
    """A node that goes away is noticed inside a message handler, which closes the reader;
    the rest of that drain must not touch the closed socket (it raised ENOTSOCK out of the
    loop's callback before)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    ctx = zmq.Context.instance()
    url = f"ipc://{tmp_path}/r.sock"
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    pull.bind(url)
    push.connect(url)
    seen: list[bytes] = []
    reader: Reader | None = None

    def on_message(msg: bytes) -> None:
        seen.append(msg)
        assert reader is not None
        reader.close()

    try:
        for n in range(3):  # queued before the reader exists: one drain sees all three
            push.send(b"m%d" % n)
        await async_wait_until(lambda: pull.poll(0), timeout=10)
        reader = Reader(pull, on_message)
        await async_wait_until(lambda: seen, timeout=10)
        for _ in range(5):
            await asyncio.sleep(0)  # a bare yield: let any stray callback run
        assert seen == [b"m0"]
        assert errors == [], errors
    finally:
        loop.set_exception_handler(None)
        push.close()
        if not pull.closed:
            pull.close(linger=0)
