"""arq: `max_jobs=100`; variant `arq-poll10ms` sets `poll_delay=0.01` (default 0.5 s)."""

from __future__ import annotations

from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

from peers.common import PAD, Producer, host_port, record_start, variant

POLL = 0.01 if variant() == "poll10ms" else 0.5
ASYNC_PRODUCER = True  # overlapping sends allowed (run.py --concurrent-sends)
DESCRIPTION = f"arq max_jobs=100, poll_delay={POLL}s"


async def job(ctx: dict[str, Any], seq: int, pad: str) -> None:
    record_start(seq)


def _settings() -> RedisSettings:
    host, port = host_port()
    return RedisSettings(host=host, port=port)


class WorkerSettings:
    functions = [job]
    redis_settings = _settings()
    max_jobs = 100
    poll_delay = POLL


def worker_argv(py: str, bindir: str) -> list[str]:
    return [f"{bindir}/arq", "peers.peer_arq.WorkerSettings"]


class _Producer(Producer):
    async def open(self) -> None:
        self.pool = await create_pool(_settings())

    async def enqueue(self, seq: int) -> None:
        await self.pool.enqueue_job("job", seq, PAD)

    async def close(self) -> None:
        await self.pool.aclose()


def producer() -> Producer:
    return _Producer()
