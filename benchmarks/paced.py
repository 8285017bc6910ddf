"""The paced publisher of the latency benchmarks, and the library-free floor's consumer.

    python benchmarks/paced.py URL QUEUE RATE SECONDS {meetq,raw} [--stamp-writes]

publishes RATE messages per second for SECONDS, each carrying its creation time in
`payload["t"]`: one `publish` when one message is due, `publish_batch` when the sender fell
behind. `raw` is the floor: LPUSH of the same JSON on meetq's `RespConnection`, no queue
library. Prints one JSON object at the end: the publisher's CPU seconds, how many single
and batch publishes it made, and per message [id, created, last socket write before its
publish returned] (the write time only with `--stamp-writes`, which wraps
`RespConnection`'s methods: a diagnostic, not an API).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

from meetq import Message, RedisMessageQueue
from meetq import connection as conn_module
from meetq.queue.message import new_id

SCRIPT = str(Path(__file__).resolve())


def publisher_command(
    url: str, name: str, rate: float, seconds: float, kind: str, stamp_writes: bool = False
) -> list[str]:
    """The argv that runs this publisher in a process of its own."""
    command = [sys.executable, SCRIPT, url, name, str(rate), str(seconds), kind]
    return command + (["--stamp-writes"] if stamp_writes else [])


async def consume_raw(
    url: str, name: str, on_body: Callable[[bytes], None], until: Callable[[], bool]
) -> None:
    """The floor's worker: BRPOP one body, RPOP what else is there, in one write."""
    conn = await conn_module.RespConnection.connect(url)
    try:
        while not until():
            reply, rest = await conn.execute_many([("BRPOP", name, 0.2), ("RPOP", name, 1000)])
            for body in ([reply[1]] if reply else []) + (rest or []):
                on_body(body)
    finally:
        await conn.close()


class RawQueue:
    """LPUSH of the message JSON, nothing else."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.conn: conn_module.RespConnection | None = None

    async def publish(self, msg: Message) -> None:
        await self.publish_batch([msg])

    async def publish_batch(self, msgs: list[Message]) -> None:
        self.conn = self.conn or await conn_module.RespConnection.connect(self.url)
        await self.conn.execute("LPUSH", self.name, *(orjson.dumps(m.to_dict()) for m in msgs))

    async def stop(self) -> None:
        if self.conn is not None:
            await self.conn.close()


wrote = [0.0]


def _stamp_writes() -> None:
    for method in ("execute", "execute_many"):
        original = getattr(conn_module.RespConnection, method)

        def stamped(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            wrote[0] = time.time()
            return _original(self, *args, **kwargs)

        setattr(conn_module.RespConnection, method, stamped)


async def publish_paced(url: str, name: str, rate: float, seconds: float, kind: str) -> None:
    q: Any = RawQueue(url, name) if kind == "raw" else RedisMessageQueue(url, name)
    cpu0 = time.process_time()
    total = int(rate * seconds)
    t0 = time.perf_counter() + 0.2
    sent = singles = batches = 0
    rows: list[tuple[str, float, float]] = []
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - t0) * rate) + 1) if now >= t0 else 0
        if due > sent:
            batch = [
                Message(type="lat", payload={"t": time.time(), "pad": "x" * 60})
                for _ in range(due - sent)
            ]
            if kind == "raw":  # the queue stamps ids itself (and skips its dedupe for them)
                for m in batch:
                    m.id = new_id()
            if len(batch) == 1:
                await q.publish(batch[0])
                singles += 1
            else:
                await q.publish_batch(batch)
                batches += 1
            rows.extend((m.id, m.payload["t"], wrote[0]) for m in batch)
            sent = due
        await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
    await q.stop()
    report = {
        "cpu": time.process_time() - cpu0,
        "singles": singles,
        "batches": batches,
        "rows": rows,
    }
    sys.stdout.buffer.write(orjson.dumps(report))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("queue")
    ap.add_argument("rate", type=float)
    ap.add_argument("seconds", type=float)
    ap.add_argument("kind", choices=("meetq", "raw"))
    ap.add_argument("--stamp-writes", action="store_true")
    args = ap.parse_args()
    if args.stamp_writes:
        _stamp_writes()
    uvloop.run(publish_paced(args.url, args.queue, args.rate, args.seconds, args.kind))


if __name__ == "__main__":
    main()
