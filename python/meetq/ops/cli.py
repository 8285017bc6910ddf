"""`meetq` command line: the demo and operator commands.

    meetq demo                       the whole pipeline on this machine
    meetq stats QUEUE                queue depths and counters
    meetq dlq list|requeue|purge QUEUE

Commands that need Redis use `--redis-url` or `REDIS_URL`; `demo` starts a private
redis-server when neither is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import uvloop

from meetq import LocalEventBus, Message, Priority, RedisMessageQueue, backend, events
from meetq.local.scheduler import Task, TaskScheduler


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, stopped on exit."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server not found: install it or set REDIS_URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="meetq-demo-") as d:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=0.2),
                ):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("could not start redis-server")
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


class Progress:
    """One status line, rewritten in place on a terminal and printed plainly otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def show(self, text: str) -> None:
        if self.tty:
            sys.stderr.write(f"\r\033[K{text}")
            sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
        print(f"  ✓ {text}", file=sys.stderr)


async def demo_bus(progress: Progress, n: int) -> dict[str, Any]:
    """Media services emit stream events from several threads; handlers count them."""
    per_stream: dict[str, int] = {}

    def on_started(ev: Any) -> None:
        sid = ev.payload["stream_id"]
        per_stream[sid] = per_stream.get(sid, 0) + 1

    async def on_stopped(ev: Any) -> None:
        per_stream.pop(ev.payload["stream_id"], None)

    async with LocalEventBus(buffer_size=8192, workers=4) as bus:
        bus.on(events.STREAM_STARTED, on_started)
        bus.on(events.STREAM_STOPPED, on_stopped)
        threads = 4
        started = time.perf_counter()

        def produce(t: int) -> None:
            for i in range(n // threads):
                payload = {"stream_id": f"s{t}-{i % 50}"}
                while not bus.emit(events.STREAM_STARTED, payload, source=f"media-{t}"):
                    time.sleep(0)

        workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        total = n // threads * threads
        while bus.get_stats()["processed_events"] < total:
            progress.show(f"local bus: {bus.get_stats()['processed_events']:,}/{total:,} events")
            await asyncio.sleep(0.05)
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
        for sid in list(per_stream)[:10]:
            await bus.emit_wait(events.STREAM_STOPPED, {"stream_id": sid}, "media-0", 1.0)
    stats = bus.get_stats()
    progress.done(f"local bus: {total:,} events from {threads} threads in {elapsed:.2f}s")
    return {"events": total, "rate": total / elapsed, "stats": stats}


async def demo_scheduler(progress: Progress, n: int) -> dict[str, Any]:
    """Delayed clean-ups and prioritized jobs on the timer wheel."""
    lateness: list[float] = []

    def job(task: Task) -> None:
        due = task.payload.get("due")
        if due is not None:
            lateness.append(time.time() - due)

    async with TaskScheduler(buffer_size=n, workers=8) as s:
        now = time.time()
        ids = []
        for i in range(n):
            delay = random.uniform(0.01, 0.5) if i % 2 else 0.0
            prio = Priority(i % 4)
            ids.append(
                s.submit(
                    Task(
                        type="cleanup",
                        priority=prio,
                        handler=job,
                        delay=delay,
                        payload={"due": now + delay} if delay else {},
                    )
                )
            )
        for i, tid in enumerate(ids):
            await s.wait(tid)
            if i % 100 == 0:
                progress.show(f"scheduler: {i:,}/{n:,} tasks done")
        stats = s.get_stats()
    lateness.sort()
    p99 = lateness[int(len(lateness) * 0.99) - 1] * 1000 if lateness else 0.0
    progress.done(f"scheduler: {n:,} tasks ({n // 2:,} delayed), p99 lateness {p99:.1f} ms")
    return {"tasks": n, "p99_late_ms": p99, "stats": stats}


async def demo_queue(progress: Progress, url: str, n: int) -> dict[str, Any]:
    """AI tasks through Redis: priorities, a flaky handler that retries, a DLQ."""
    done: dict[str, int] = {}

    def transcribe(msg: Message) -> dict[str, Any]:
        if msg.payload.get("corrupt"):
            raise ValueError("audio chunk is corrupt")
        done[msg.priority.name] = done.get(msg.priority.name, 0) + 1
        return {"text": f"transcript of {msg.payload['chunk']}"}

    queue_name = f"demo_ai_tasks_{os.getpid()}"
    async with RedisMessageQueue(url, queue_name, workers=8, retry_backoff=0.01) as q:
        q.register_handler("speech_recognition", transcribe)
        started = time.perf_counter()
        batch: list[Message] = []
        for i in range(n):
            batch.append(
                Message(
                    type="speech_recognition",
                    priority=Priority(i % 4),
                    payload={"chunk": i, "meeting_id": 42, "corrupt": i % 500 == 0},
                    max_retries=2,
                )
            )
            if len(batch) == 500:
                await q.publish_batch(batch)
                batch = []
        if batch:
            await q.publish_batch(batch)
        corrupt = len(range(0, n, 500))
        while True:
            stats = await q.get_stats()
            finished = stats["total_processed"] + stats["dead_letter_count"]
            progress.show(f"redis queue: {finished:,}/{n:,} messages")
            if finished >= n:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        dead = await q.dead_letters(1)
        reason = dead[0].reason if dead else ""
        await q.purge_dead_letters()
    progress.done(
        f"redis queue: {n:,} messages in {elapsed:.2f}s, {corrupt} to the DLQ after retries"
    )
    return {
        "messages": n,
        "rate": n / elapsed,
        "stats": stats,
        "by_priority": done,
        "dlq_reason": reason,
    }


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line]
    for j, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if j == 0:
            out.append(line)
    out.append(line)
    return "\n".join(out)


async def run_demo(url: str, scale: float) -> None:
    progress = Progress()
    print(f"meetq demo — backend {backend()}, redis {url}", file=sys.stderr)
    bus = await demo_bus(progress, int(200_000 * scale))
    sched = await demo_scheduler(progress, int(2_000 * scale))
    queue = await demo_queue(progress, url, int(5_000 * scale))
    qs = queue["stats"]
    print(
        table(
            [
                ("component", "work", "result"),
                (
                    "LocalEventBus",
                    f"{bus['events']:,} events, 4 threads",
                    f"{bus['rate']:,.0f} events/s, "
                    f"{bus['stats']['dropped_events']} refused while full (re-emitted)",
                ),
                (
                    "TaskScheduler",
                    f"{sched['tasks']:,} tasks, half delayed",
                    f"{sched['stats']['completed_tasks']:,} completed, "
                    f"delayed ones p99 {sched['p99_late_ms']:.1f} ms late (sharing 8 workers)",
                ),
                (
                    "RedisMessageQueue",
                    f"{queue['messages']:,} AI tasks, 4 priorities",
                    f"{queue['rate']:,.0f} msgs/s, {qs['total_processed']:,} processed, "
                    f"{qs['total_retried']} retried, {qs['dead_letter_count']} dead-lettered",
                ),
            ]
        )
    )
    if queue["dlq_reason"]:
        print(f"DLQ reason recorded: {queue['dlq_reason']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="meetq", description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole pipeline on this machine")
    demo.add_argument("--scale", type=float, default=1.0, help="shrink or grow the workload")
    stats = sub.add_parser("stats", help="print a queue's stats as JSON")
    stats.add_argument("queue")
    dlq = sub.add_parser("dlq", help="inspect or act on a dead-letter queue")
    dlq.add_argument("action", choices=["list", "requeue", "purge"])
    dlq.add_argument("queue")
    dlq.add_argument("-n", type=int, default=10)
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.redis_url:
            uvloop.run(run_demo(args.redis_url, args.scale))
        else:
            with private_redis() as url:
                uvloop.run(run_demo(url, args.scale))
        return
    if not args.redis_url:
        raise SystemExit("set --redis-url or REDIS_URL")
    uvloop.run(_operate(args))


async def _operate(args: argparse.Namespace) -> None:
    q = RedisMessageQueue(args.redis_url, args.queue)
    try:
        if args.command == "stats":
            print(orjson.dumps(await q.get_stats(), option=orjson.OPT_INDENT_2).decode())
        elif args.action == "list":
            for d in await q.dead_letters(args.n):
                print(
                    orjson.dumps(
                        {
                            "id": d.id,
                            "reason": d.reason,
                            "failed_at": d.failed_at,
                            "deliveries": d.deliveries,
                        }
                    ).decode()
                )
        elif args.action == "requeue":
            print(f"requeued {await q.requeue_dead_letters(args.n)}")
        else:
            print(f"purged {await q.purge_dead_letters()}")
    finally:
        await q.stop()


if __name__ == "__main__":
    main()
