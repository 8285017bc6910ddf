"""taskiq + taskiq-redis: `--workers 1 --max-async-tasks 100`; list broker or stream broker."""

from __future__ import annotations

from taskiq_redis import ListQueueBroker, RedisStreamBroker

from peers.common import PAD, Producer, record_start, url, variant

KIND = variant() or "list"
broker = RedisStreamBroker(url()) if KIND == "stream" else ListQueueBroker(url())
ASYNC_PRODUCER = True  # overlapping sends allowed (run.py --concurrent-sends)
DESCRIPTION = f"taskiq {KIND} broker, --workers 1 --max-async-tasks 100"


@broker.task(task_name="job")
async def job(seq: int, pad: str) -> None:
    record_start(seq)


def worker_argv(py: str, bindir: str) -> list[str]:
    return [
        f"{bindir}/taskiq", "worker", "peers.peer_taskiq:broker",
        "--workers", "1", "--max-async-tasks", "100", "--no-configure-logging",
    ]  # fmt: skip


class _Producer(Producer):
    async def open(self) -> None:
        await broker.startup()

    async def enqueue(self, seq: int) -> None:
        await job.kiq(seq, PAD)

    async def close(self) -> None:
        await broker.shutdown()


def producer() -> Producer:
    return _Producer()
