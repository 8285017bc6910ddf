"""CPU per message of the queue's own code, for A/B runs of two source trees (`ab_trees.sh`
style: run it once per tree with PYTHONPATH pointing at the tree, alternately).

    PYTHONPATH=<tree>/python python benchmarks/ab_cpu.py [--jobs 20000] [--rounds 3]

- deliver: the delivery path with no Redis at all: a synthetic dequeue reply of 100
  messages (~100-byte payloads) handed to the code that decodes each, runs a sync no-op
  handler inline and records its ack (the old tree's `RedisMessageQueue._deliver`, the new
  tree's `Slots.deliver`); process CPU per message, median and min of 30 x 20 replies.
- drain: one process draining `--jobs` queued sync no-op jobs from a private
  redis-server, process CPU per job from start() to the last handler (both as in
  `bench_queue_self.py`).

CPU time, not wall time: on a loaded machine it moves far less than the wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from helpers import running_redis
from meetq import Message, RedisMessageQueue

PAYLOAD = {"user_id": 12345, "meeting_id": 67890, "blob": "x" * 48}


def deliver_cpu() -> tuple[float, float]:
    q: Any = RedisMessageQueue("redis://127.0.0.1:1/0", "ab", workers=100)
    q.register_handler("noop", lambda m: None)
    body = q.codec.encode(Message(type="noop", payload=PAYLOAD).stamp())
    reply: list[Any] = [0, -1, 0]
    for i in range(100):
        reply += [b"id%d" % i, b"%d:1:0" % i, 1, 0, body]
    if hasattr(q, "slots"):  # the split queue
        deliver = q.slots.deliver

        def reset() -> None:
            q.fetcher.acks.pending = []
            q.leases.held.clear()
    else:  # the one-class queue before the split
        deliver = q._deliver

        def reset() -> None:
            q._acks = []
            q._held.clear()

    runs = []
    for _ in range(30):
        c0 = time.process_time()
        for _ in range(20):
            deliver(reply)
            reset()
        runs.append((time.process_time() - c0) / 2000 * 1e6)
    return statistics.median(runs), min(runs)


async def drain_cpu(url: str, jobs: int, rounds: int) -> list[float]:
    out = []
    for rnd in range(rounds):
        q = RedisMessageQueue(url, f"ab-drain-{rnd}", workers=100)
        count = 0
        done = asyncio.Event()

        def noop(msg: Message, done: asyncio.Event = done) -> None:
            nonlocal count
            count += 1
            if count == jobs:
                done.set()

        q.register_handler("noop", noop)
        for i in range(0, jobs, 5000):
            n = min(5000, jobs - i)
            await q.publish_batch([Message(type="noop", payload=PAYLOAD) for _ in range(n)])
        c0 = time.process_time()
        await q.start()
        await done.wait()
        out.append((time.process_time() - c0) / jobs * 1e6)
        await q.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    med, low = deliver_cpu()
    print(f"deliver: {med:.3f} us/msg CPU (min {low:.3f})")
    with running_redis() as server:
        drains = uvloop.run(drain_cpu(server.url, args.jobs, args.rounds))
    print("drain: " + " ".join(f"{d:.2f}" for d in drains) + " us/job CPU")


if __name__ == "__main__":
    main()
