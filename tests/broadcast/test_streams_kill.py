"""Three services, two processes each, 1,000 events, one process SIGKILLed midway: every
service ends with every event handled, duplicates only among the entries the killed process
held, and the dead consumer leaves its group."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    async_wait_until,
    await_ready,
    reaped,
    redis_client,
    spawn_script,
    tcp_addrs,
    until_disconnected,
)
from meetq import RedisStreamEventBus, StreamEvent
from meetq._redis.keys import StreamKeys

WORKER = Path(__file__).parent.parent / "support" / "stream_worker.py"
SERVICES = ("media", "ai", "notify")
TOPIC = "meeting.user_joined"
TOTAL = 1000


@contextlib.contextmanager
def workers(url: str) -> Iterator[dict[str, list[tuple[subprocess.Popen[bytes], str]]]]:
    """Two worker processes per service, each waited for until "ready"; always reaped."""
    procs: dict[str, list[tuple[subprocess.Popen[bytes], str]]] = {s: [] for s in SERVICES}
    with contextlib.ExitStack() as stack:
        for service in SERVICES:
            for _ in range(2):
                proc = spawn_script(WORKER, url, service, TOPIC, f"done:{service}")
                procs[service].append((stack.enter_context(reaped(proc)), ""))
        for group in procs.values():
            for i, (proc, _) in enumerate(group):
                group[i] = (proc, await_ready(proc)[0])
        yield procs


async def _handled(r: Any, service: str) -> list[tuple[str, str]]:
    raw = await r.lrange(f"done:{service}", 0, -1)
    return [tuple(x.decode().split("|", 1)) for x in raw]  # type: ignore[misc]


@pytest.mark.slow
async def test_sigkill_one_process_every_service_gets_everything(redis_url: str) -> None:
    stream = StreamKeys(TOPIC).stream
    publisher = RedisStreamEventBus(redis_url, "meeting")
    loop = asyncio.get_running_loop()
    async with redis_client(redis_url) as r:
        with workers(redis_url) as procs:
            published: list[str] = []

            async def produce() -> None:
                for start in range(0, TOTAL, 10):
                    batch = [StreamEvent("user_joined", {"n": n}) for n in range(start, start + 10)]
                    published.extend(await publisher.publish_batch(TOPIC, batch))
                    await asyncio.sleep(0.005)  # a steady producer, not synchronization

            producing = asyncio.ensure_future(produce())
            victim, victim_name = procs["media"][0]
            await async_wait_until(lambda: _count_by(r, "media", victim_name, 100), timeout=60)
            victim_addrs = tcp_addrs(victim.pid)
            victim.send_signal(signal.SIGKILL)
            await loop.run_in_executor(None, victim.wait, 10)
            await until_disconnected(r, victim_addrs)  # an XACK it wrote last may still run
            held = await r.xpending_range(stream, "media", "-", "+", 10_000, victim_name)
            held_at_kill = {h["message_id"].decode() for h in held}
            await asyncio.wait_for(producing, 120)
            assert len(published) == TOTAL

            for service in SERVICES:
                await async_wait_until(
                    lambda s=service: _all_handled(r, s, set(published)), timeout=60
                )
            # what the killed process held (handled there or not, never acked) is claimed by
            # its sibling once idle for claim_idle: wait for that, not only for one handling
            survivor = procs["media"][1][1]
            await async_wait_until(
                lambda: _handled_by(r, "media", survivor, held_at_kill), timeout=60
            )
            for service in SERVICES:
                counts = collections.Counter(eid for _, eid in await _handled(r, service))
                assert set(counts) == set(published), service
                duplicates = {eid for eid, c in counts.items() if c > 1}
                if service == "media":
                    assert duplicates <= held_at_kill
                    # what the killed process held was claimed and handled by its sibling
                    assert await _handled_by(r, "media", survivor, held_at_kill)
                    print(f"held at kill: {len(held_at_kill)}, duplicates: {len(duplicates)}")
                else:
                    assert duplicates == set(), service
            # the killed consumer's entries were claimed, then it was removed from its group
            await async_wait_until(lambda: _consumer_gone(r, stream, victim_name), timeout=30)
            for service in SERVICES:
                await async_wait_until(lambda s=service: _nothing_pending(r, stream, s), timeout=30)


async def _count_by(r: Any, service: str, consumer: str, n: int) -> bool:
    return sum(1 for c, _ in await _handled(r, service) if c == consumer) >= n


async def _handled_by(r: Any, service: str, consumer: str, ids: set[str]) -> bool:
    return {e for c, e in await _handled(r, service) if c == consumer} >= ids


async def _all_handled(r: Any, service: str, published: set[str]) -> bool:
    return {eid for _, eid in await _handled(r, service)} >= published


async def _consumer_gone(r: Any, stream: str, name: str) -> bool:
    names = {c["name"] for c in await r.xinfo_consumers(stream, "media")}
    return name not in {n.decode() if isinstance(n, bytes) else n for n in names}


async def _nothing_pending(r: Any, stream: str, group: str) -> bool:
    return int((await r.xpending(stream, group))["pending"]) == 0
