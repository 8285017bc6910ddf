"""No library: redis-py (hiredis) RPUSH in pipelines of 1,000, one worker popping 100 at a time.

The floor of client-side cost on this machine: `LPOP key 100` in a loop (BLPOP when
empty), the payload parsed by hand, the job run inline.
"""

from __future__ import annotations

import signal

from peers.common import PAD, Producer, record_start, url

KEY = "raw:q"
DESCRIPTION = "redis-py LPOP count=100 loop, inline"


def run_worker() -> None:
    import redis

    r = redis.Redis.from_url(url())
    running = [True]

    def stop(*_: object) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running[0]:
        items = r.lpop(KEY, 100)
        if not items:
            got = r.blpop([KEY], timeout=0.5)
            items = [got[1]] if got else []
        for item in items:
            record_start(int(item.split(b":", 1)[0]))


def worker_argv(py: str, bindir: str) -> list[str]:
    return [py, "-m", "peers.common", "worker", "raw"]


class _Producer(Producer):
    async def open(self) -> None:
        import redis

        self.r = redis.Redis.from_url(url())
        self.enqueue_many = self._many

    async def enqueue(self, seq: int) -> None:
        self.r.rpush(KEY, f"{seq}:{PAD}")

    async def _many(self, seqs: list[int]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for s in seqs:
            pipe.rpush(KEY, f"{s}:{PAD}")
        pipe.execute()

    async def close(self) -> None:
        self.r.close()


def producer() -> Producer:
    return _Producer()
