"""The Reader's drain against real ZMQ sockets (ipc in a temp dir)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

zmq = pytest.importorskip("zmq")

from helpers import async_wait_until  # noqa: E402
from meetq.ai.reactor import PEEKS, Reader  # noqa: E402


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


async def test_runs_around_the_peeks_are_all_delivered_and_the_edge_rearmed(
    tmp_path: Path,
) -> None:
    """After each of the first PEEKS messages an EVENTS read, not a failing recv, may end
    a drain; the FD's edge must be re-armed either way, so runs of every length around
    PEEKS, sent after the reader went idle, are all delivered, in order."""
    ctx = zmq.Context.instance()
    url = f"ipc://{tmp_path}/runs.sock"
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    pull.bind(url)
    push.connect(url)
    seen: list[bytes] = []
    drains: list[int] = []
    reader = Reader(pull, seen.append, on_drained=lambda: drains.append(len(seen)))
    try:
        expected: list[bytes] = []
        for n in (1, 2, PEEKS, PEEKS + 1, PEEKS + 2, 40):
            idle = len(expected)  # the last drain saw everything sent so far
            await async_wait_until(lambda i=idle: bool(drains) and drains[-1] == i, timeout=10)
            run = [b"%d-%d" % (n, i) for i in range(n)]
            for msg in run:
                push.send(msg)
            expected += run
            total = len(expected)
            await async_wait_until(lambda t=total: len(seen) == t, timeout=10)
        assert seen == expected
    finally:
        reader.close()
        push.close()
