"""huey (RedisHuey, blocking pop): consumer with 8 worker threads, results off."""

from __future__ import annotations

from huey import RedisHuey

from peers.common import PAD, Producer, record_start, url

huey = RedisHuey("bench", url=url(), results=False)
DESCRIPTION = "huey_consumer -k thread -w 8"


@huey.task(name="job")
def job(seq: int, pad: str) -> None:
    record_start(seq)


def worker_argv(py: str, bindir: str) -> list[str]:
    return [f"{bindir}/huey_consumer", "peers.peer_huey.huey", "-k", "thread", "-w", "8", "-q"]


class _Producer(Producer):
    async def enqueue(self, seq: int) -> None:
        job(seq, PAD)


def producer() -> Producer:
    return _Producer()
