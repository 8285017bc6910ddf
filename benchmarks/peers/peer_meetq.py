"""meetq's RedisMessageQueue: 100 worker slots in one process, a sync no-op handler.

Runs in meetq's own venv. Enqueue uses `publish_batch` (bulk, 1,000 per call).
"""

from __future__ import annotations

from typing import Any

from peers.common import PAD, Producer, record_start, run_until_signalled, url

QUEUE = "bench"
WORKERS = 100
ASYNC_PRODUCER = True  # overlapping sends allowed (run.py --concurrent-sends)
DESCRIPTION = f"RedisMessageQueue workers={WORKERS}, sync handler"


def _handler(msg: Any) -> None:
    record_start(msg.payload["seq"])


def run_worker() -> None:
    from meetq import RedisMessageQueue

    holder: dict[str, Any] = {}

    async def start() -> None:
        q = RedisMessageQueue(url(), QUEUE, workers=WORKERS)
        q.register_handler("noop", _handler)
        holder["q"] = q
        await q.start()

    async def stop() -> None:
        await holder["q"].stop()

    run_until_signalled(start, stop)


def worker_argv(py: str, bindir: str) -> list[str]:
    return [py, "-m", "peers.common", "worker", "meetq"]


class _Producer(Producer):
    async def open(self) -> None:
        from meetq import RedisMessageQueue

        self.q = RedisMessageQueue(url(), QUEUE)
        self.enqueue_many = self._many

    async def enqueue(self, seq: int) -> None:
        from meetq import Message

        await self.q.publish(Message(type="noop", payload={"seq": seq, "pad": PAD}))

    async def _many(self, seqs: list[int]) -> None:
        from meetq import Message

        await self.q.publish_batch(
            [Message(type="noop", payload={"seq": s, "pad": PAD}) for s in seqs]
        )

    async def close(self) -> None:
        await self.q.stop()


def producer() -> Producer:
    return _Producer()
