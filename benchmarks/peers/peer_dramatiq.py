"""dramatiq with its Redis broker: one process, 8 threads (its default thread count)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from peers.common import PAD, Producer, record_start, url

broker = RedisBroker(url=url())
dramatiq.set_broker(broker)
DESCRIPTION = "dramatiq --processes 1 --threads 8"


@dramatiq.actor(actor_name="job", max_retries=0)
def job(seq: int, pad: str) -> None:
    record_start(seq)


def worker_argv(py: str, bindir: str) -> list[str]:
    return [f"{bindir}/dramatiq", "peers.peer_dramatiq", "--processes", "1", "--threads", "8"]


class _Producer(Producer):
    async def enqueue(self, seq: int) -> None:
        job.send(seq, PAD)

    async def close(self) -> None:
        broker.close()


def producer() -> Producer:
    return _Producer()
