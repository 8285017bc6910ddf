"""celery with the Redis broker: prefork pool of 2, results ignored, no gossip/mingle."""

from __future__ import annotations

from celery import Celery

from peers.common import PAD, Producer, record_start, url

app = Celery("bench", broker=url())
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
DESCRIPTION = "celery prefork -c 2"


@app.task(name="job")
def job(seq: int, pad: str) -> None:
    record_start(seq)


def worker_argv(py: str, bindir: str) -> list[str]:
    return [
        f"{bindir}/celery", "-A", "peers.peer_celery", "worker", "--pool", "prefork",
        "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-l", "WARNING",
    ]  # fmt: skip


class _Producer(Producer):
    async def enqueue(self, seq: int) -> None:
        job.delay(seq, PAD)


def producer() -> Producer:
    return _Producer()
