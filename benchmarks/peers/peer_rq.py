"""rq: one SimpleWorker (no fork per job)."""

from __future__ import annotations

from peers.common import PAD, Producer, record_start, url

DESCRIPTION = "rq SimpleWorker"


def job(seq: int, pad: str) -> None:
    record_start(seq)


def worker_argv(py: str, bindir: str) -> list[str]:
    return [f"{bindir}/rq", "worker", "--url", url(), "-w", "rq.worker.SimpleWorker", "-q", "bench"]


class _Producer(Producer):
    async def open(self) -> None:
        from redis import Redis
        from rq import Queue

        self.conn = Redis.from_url(url())
        self.q = Queue("bench", connection=self.conn)

    async def enqueue(self, seq: int) -> None:
        self.q.enqueue("peers.peer_rq.job", seq, PAD)

    async def close(self) -> None:
        self.conn.close()


def producer() -> Producer:
    return _Producer()
