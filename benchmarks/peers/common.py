"""What every contender shares: the start board, the payload, the enqueuer and worker mains.

Stdlib only at import time, because it runs in two venvs: meetq's (`.venv`) and the
peers' (`.venv-bench`).

The board is a shared, mmap'd file of `2 * n` doubles: slot `2*seq` is the job's enqueue
time (written by the enqueuer right before the enqueue call), slot `2*seq+1` its start time
(written by the job itself, first thing). Times are `time.perf_counter()`, which on Linux is
CLOCK_MONOTONIC and so comparable across processes. A job therefore "records its start time
and nothing else": no Redis command, no syscall, nothing that would bias a peer; the
orchestrator reads the board to see progress, rates and latencies.

Entry points (run as `python -m peers.common ...` with `benchmarks/` on PYTHONPATH):
    enqueue <peer> --n N              enqueue jobs 0..N-1 as fast as the peer allows
    paced <peer> --n N --rate R       job 0, wait until it started (worker warm), then
                                      jobs 1..N-1 at R jobs/s on a fixed schedule
    worker <peer>                     run the peer's in-process worker (peers without a CLI)
Each prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import mmap
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

URL_ENV = "MEETQ_BENCH_URL"
BOARD_ENV = "MEETQ_BENCH_BOARD"
PAD = "x" * 88  # with the job's seq and the framing of each library: a ~100-byte payload

_view: memoryview | None = None


def variant() -> str:
    """The part of the contender's name after the module, e.g. "stream" for taskiq-stream."""
    return os.environ.get("MEETQ_BENCH_VARIANT", "")


def url() -> str:
    return os.environ[URL_ENV]


def host_port() -> tuple[str, int]:
    rest = url().split("://", 1)[1].split("/", 1)[0]
    host, port = rest.rsplit(":", 1)
    return host, int(port)


def board(path: str | None = None) -> memoryview:
    """This process's view of the board (opened once; inherited across fork)."""
    global _view
    if _view is None:
        with open(path or os.environ[BOARD_ENV], "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
        _view = memoryview(mm).cast("d")
    return _view


def record_start(seq: int) -> None:
    """The whole job body: note when it started."""
    board()[2 * seq + 1] = time.perf_counter()


def make_board(path: str, n: int) -> None:
    with open(path, "wb") as f:
        f.truncate(16 * n)


class Producer:
    """What a peer module provides (as `producer()`), all async; sync libraries just block."""

    async def open(self) -> None: ...
    async def enqueue(self, seq: int) -> None: ...
    async def close(self) -> None: ...

    enqueue_many: Callable[[list[int]], Awaitable[None]] | None = None


async def _enqueue_main(mod: Any, n: int) -> dict[str, Any]:
    view = board()
    prod: Producer = mod.producer()
    await prod.open()
    try:
        t0 = time.perf_counter()
        if prod.enqueue_many is not None:
            for start in range(0, n, 1000):
                seqs = list(range(start, min(n, start + 1000)))
                now = time.perf_counter()
                for s in seqs:
                    view[2 * s] = now
                await prod.enqueue_many(seqs)
        else:
            for seq in range(n):
                view[2 * seq] = time.perf_counter()
                await prod.enqueue(seq)
        elapsed = time.perf_counter() - t0
    finally:
        await prod.close()
    return {"enqueued": n, "seconds": elapsed, "bulk": prod.enqueue_many is not None}


async def _paced_main(
    mod: Any, n: int, rate: float, warm_timeout: float, concurrent: bool
) -> dict[str, Any]:
    view = board()
    # Overlapping sends only make sense for asyncio clients: a blocking enqueue would run
    # later than the time recorded for it and charge the sender's backlog to the queue.
    concurrent = concurrent and getattr(mod, "ASYNC_PRODUCER", False)
    prod: Producer = mod.producer()
    await prod.open()
    try:
        view[0] = time.perf_counter()
        await prod.enqueue(0)
        deadline = time.monotonic() + warm_timeout
        while view[1] == 0.0:
            if time.monotonic() > deadline:
                return {"error": "warm-up job never started"}
            await asyncio.sleep(0.005)
        t0 = time.perf_counter() + 0.05
        late = 0
        sends: set[asyncio.Future[Any]] = set()
        for seq in range(1, n):
            due = t0 + (seq - 1) / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.01:
                late += 1
            view[2 * seq] = time.perf_counter()
            if concurrent:  # do not wait for the reply before the next send is due
                send = asyncio.ensure_future(prod.enqueue(seq))
                sends.add(send)
                send.add_done_callback(sends.discard)
            else:
                await prod.enqueue(seq)
        if sends:
            await asyncio.gather(*sends)
        elapsed = time.perf_counter() - t0
    finally:
        await prod.close()
    return {"enqueued": n - 1, "seconds": elapsed, "late": late}


def run_until_signalled(
    start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]
) -> None:
    """Runs an in-process worker until SIGTERM/SIGINT, then stops it gracefully."""

    async def main() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await start()
        await done.wait()
        await stop()

    _run(main())


def _run(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="peers.common")
    ap.add_argument("mode", choices=["enqueue", "paced", "worker"])
    ap.add_argument("peer")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--warm-timeout", type=float, default=60.0)
    ap.add_argument("--concurrent", action="store_true", help="paced: overlapping sends")
    args = ap.parse_args(argv)
    mod = importlib.import_module(f"peers.peer_{args.peer.split('-')[0]}")
    if args.mode == "worker":
        mod.run_worker()
        return
    if args.mode == "enqueue":
        result = _run(_enqueue_main(mod, args.n))
    else:
        result = _run(_paced_main(mod, args.n, args.rate, args.warm_timeout, args.concurrent))
    print(json.dumps(result), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
