"""saq: one worker process, `concurrency=100`."""

from __future__ import annotations

from typing import Any

from saq import Queue

from peers.common import PAD, Producer, record_start, url

queue = Queue.from_url(url(), name="bench")
ASYNC_PRODUCER = True  # overlapping sends allowed (run.py --concurrent-sends)
DESCRIPTION = "saq --workers 1, concurrency=100"


async def job(ctx: dict[str, Any], *, seq: int, pad: str) -> None:
    record_start(seq)


settings = {"queue": queue, "functions": [job], "concurrency": 100}


def worker_argv(py: str, bindir: str) -> list[str]:
    return [f"{bindir}/saq", "peers.peer_saq.settings", "--workers", "1", "--quiet"]


class _Producer(Producer):
    async def open(self) -> None:
        await queue.connect()

    async def enqueue(self, seq: int) -> None:
        await queue.enqueue("job", seq=seq, pad=PAD)

    async def close(self) -> None:
        await queue.disconnect()


def producer() -> Producer:
    return _Producer()
