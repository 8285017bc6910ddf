"""AI path benchmarks: (a) StackFlowClient <-> StackFlowNode round trips beside a raw pyzmq
floor on the same socket pattern, in the same run; (c) real-model latency per request.

(a) The node runs in its own process (`meetq ai-node --model echo`), as in production.
The floor is the same pattern with nothing but pyzmq in both processes: an XPUB bound by
the client, a SUB in the "node" that echoes each frame to a PUSH, a PULL at the client,
all on ipc:// in one private directory. `--format stream` (the default) sets the echo up
streamed, so each answer is the protocol's two frames (the delta, then `finish`);
`--format plain` answers with one frame, as the floor does. Sequential round trips give p50/p99; the
multiplexed run keeps `window` requests in flight on one node pair (a sliding window on
both paths: each reply lets the next request go) and reports requests/s.

    .venv/bin/python benchmarks/bench_ai.py                 # (a) and (c)
    .venv/bin/python benchmarks/bench_ai.py --only a --n 5000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop
import zmq

from meetq.ai import StackFlowClient, StackFlowNode
from meetq.ai.models import builtin

RAW_NODE = r"""
import sys, zmq
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB); sub.setsockopt(zmq.SUBSCRIBE, b""); sub.setsockopt(zmq.RCVHWM, 0)
sub.connect(sys.argv[1])
push = ctx.socket(zmq.PUSH); push.setsockopt(zmq.SNDHWM, 0); push.setsockopt(zmq.LINGER, 0)
push.connect(sys.argv[2])
while True:
    push.send(sub.recv())
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc), to report CPU per request."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io_thread_cpu(pid: int) -> float:
    """CPU time of a process's libzmq I/O threads (`ZMQbg/IO/*`), the part of its CPU that
    grows with the number of wake-ups rather than with our Python code."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            if "(ZMQbg/IO" in stat:
                fields = stat.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


SEQ_CPU: dict[str, tuple[float, float]] = {}
"""CPU per sequential round trip (client, node), seconds: what a round trip's latency is
made of besides the wake-ups, and less inflated than latency by a loaded machine."""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summary(name: str, lat_s: list[float]) -> dict[str, Any]:
    ms = [x * 1000 for x in lat_s]
    return {
        "name": name,
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": pct(ms, 0.99),
        "p999_ms": pct(ms, 0.999),
    }


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mqbench-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def process(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


# --- (a) the raw floor ----------------------------------------------------------------


def raw_floor(
    n: int, burst: int, window: int, frame: bytes
) -> tuple[list[float], float, float, float]:
    """Blocking pyzmq in both processes: sequential round trips, then a pipelined burst."""
    with private_dir() as d:
        ctx = zmq.Context()
        xpub = ctx.socket(zmq.XPUB)
        xpub.setsockopt(zmq.SNDHWM, 0)
        xpub.bind(f"ipc://{d}/inf")
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 0)
        pull.bind(f"ipc://{d}/reply")
        argv = [sys.executable, "-c", RAW_NODE, f"ipc://{d}/inf", f"ipc://{d}/reply"]
        with process(argv) as proc:
            assert xpub.poll(30_000), "raw node never subscribed"
            xpub.recv()
            for _ in range(200):  # warm-up
                xpub.send(frame)
                pull.recv()
            lat = []
            cpu, node_cpu = time.process_time(), cpu_seconds(proc.pid)
            for _ in range(n):
                t = time.perf_counter()
                xpub.send(frame)
                pull.recv()
                lat.append(time.perf_counter() - t)
            SEQ_CPU["raw"] = (
                (time.process_time() - cpu) / n,
                (cpu_seconds(proc.pid) - node_cpu) / n,
            )
            t = time.perf_counter()
            cpu, node_cpu = time.process_time(), cpu_seconds(proc.pid)
            sent = received = 0
            while received < burst:
                while sent < burst and sent - received < window:
                    xpub.send(frame)
                    sent += 1
                pull.recv()
                received += 1
            rate = burst / (time.perf_counter() - t)
            cpu = (time.process_time() - cpu) / burst
            node_cpu = (cpu_seconds(proc.pid) - node_cpu) / burst
        ctx.destroy(linger=0)
    return lat, rate, cpu, node_cpu


# --- (a) ours ---------------------------------------------------------------------------


async def pipelined(client: StackFlowClient, work_id: str, total: int, window: int) -> None:
    """`total` inferences with `window` in flight: each completion sends the next one
    (a sliding window, like the floor's loop; no task per call)."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    sent = received = 0

    def issue() -> None:
        nonlocal sent
        sent += 1
        client.infer(work_id, "hi").add_done_callback(on_done)

    def on_done(fut: asyncio.Future[str]) -> None:
        nonlocal received
        received += 1
        if fut.exception() is not None and not finished.done():
            finished.set_exception(fut.exception())  # type: ignore[arg-type]
        elif sent < total:
            issue()
        elif received == total and not finished.done():
            finished.set_result(None)

    for _ in range(min(window, total)):
        issue()
    await finished


FORMATS = {"stream": "llm.utf-8.stream", "plain": "llm.utf-8"}
"""--format: the echo's response_format (and input): streamed (two frames) or one frame."""


async def ours(
    n: int, burst: int, window: int, fmt: str
) -> tuple[list[float], float, float, float]:
    with private_dir() as d:
        code = "import sys; from meetq.ai.node import run_node_from_args as r; sys.exit(r())"
        argv = [sys.executable, "-c", code, "--model", "echo", "--base-dir", str(d)]
        argv += ["--log-level", "WARNING"]
        async with StackFlowClient(d, call_timeout=60, setup_timeout=60) as client:
            with process(argv) as proc:
                work_id = await client.setup("llm", "echo", response_format=fmt, input=fmt)
                for _ in range(200):
                    await client.infer(work_id, "hi")
                lat = []
                cpu, node_cpu = time.process_time(), cpu_seconds(proc.pid)
                for _ in range(n):
                    t = time.perf_counter()
                    await client.infer(work_id, "hi")
                    lat.append(time.perf_counter() - t)
                SEQ_CPU["ours"] = (
                    (time.process_time() - cpu) / n,
                    (cpu_seconds(proc.pid) - node_cpu) / n,
                )
                t = time.perf_counter()
                cpu, node_cpu = time.process_time(), cpu_seconds(proc.pid)
                io = (io_thread_cpu(os.getpid()), io_thread_cpu(proc.pid))
                await pipelined(client, work_id, burst, window)
                rate = burst / (time.perf_counter() - t)
                cpu = (time.process_time() - cpu) / burst
                node_cpu = (cpu_seconds(proc.pid) - node_cpu) / burst
                io_us = (
                    (io_thread_cpu(os.getpid()) - io[0]) / burst * 1e6,
                    (io_thread_cpu(proc.pid) - io[1]) / burst * 1e6,
                )
                print(
                    f"meetq multiplexed: libzmq I/O threads' share of the CPU per request: "
                    f"client {io_us[0]:.1f} µs, node {io_us[1]:.1f} µs"
                )
                await client.exit(work_id)
    return lat, rate, cpu, node_cpu


# --- (c) real models --------------------------------------------------------------------


def espeak_pcm(text: str) -> bytes:
    from meetq.ai.speech import speak

    return speak(text)


async def real_models(n: int) -> list[dict[str, Any]]:
    out = []
    with private_dir() as d:
        async with (
            StackFlowClient(d, call_timeout=120, setup_timeout=120) as client,
            StackFlowNode("asr", builtin("asr"), d),
            StackFlowNode("llm", builtin("sentiment"), d),
        ):
            t = time.perf_counter()
            asr = await client.setup("asr", "pocketsphinx")
            asr_setup = time.perf_counter() - t
            pcm = espeak_pcm("start recording")
            chunks = [
                base64.b64encode(pcm[i : i + 8000]).decode() for i in range(0, len(pcm), 8000)
            ]
            lat = []
            for _ in range(n):
                t = time.perf_counter()
                text = await client.infer(asr, chunks)
                lat.append(time.perf_counter() - t)
                assert text == "start recording", text
            row = summary("asr (PocketSphinx grammar, 1 phrase)", lat)
            row["audio_s"] = len(pcm) / 2 / 16000
            row["setup_s"] = asr_setup
            out.append(row)
            vader = await client.setup(
                "llm", "vader", response_format="llm.utf-8", input="llm.utf-8"
            )
            lat = []
            for _ in range(n * 10):
                t = time.perf_counter()
                await client.infer(vader, "The audio is great today, thanks everyone!")
                lat.append(time.perf_counter() - t)
            out.append(summary("sentiment (VADER, one chat line)", lat))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("a", "c"))
    parser.add_argument("--n", type=int, default=3000, help="sequential round trips")
    parser.add_argument("--burst", type=int, default=40000, help="multiplexed requests")
    parser.add_argument("--window", type=int, default=1000, help="requests in flight")
    parser.add_argument("--model-n", type=int, default=20, help="ASR requests")
    parser.add_argument("--format", choices=tuple(FORMATS), default="stream")
    args = parser.parse_args()
    print(f"# bench_ai  load average {os.getloadavg()}  cores {os.cpu_count()}")
    print(f"# (a) the echo's response_format: {FORMATS[args.format]}")
    if args.only in (None, "a"):
        # The floor's frame is the size of our inference request.
        frame = (
            b'{"zmq_com":"ipc:///tmp/mqbench-xxxxxxxx/llm/8000.sock","request_id":"a1b2c3-17",'
            b'"work_id":"llm.0","action":"inference","object":"llm.utf-8.stream",'
            b'"data":{"delta":"hi","index":0,"finish":true}}'
        )
        raw_lat, raw_rate, raw_cpu, raw_node = raw_floor(args.n, args.burst, args.window, frame)
        our_lat, our_rate, our_cpu, our_node = uvloop.run(
            ours(args.n, args.burst, args.window, FORMATS[args.format])
        )
        raw, mine = summary("raw pyzmq floor", raw_lat), summary("meetq client+node", our_lat)
        print(
            "| path | round trips | p50 ms | p99 ms | p99.9 ms | multiplexed req/s "
            "| client CPU µs/req | node CPU µs/req |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row, rate, cpu, node in (
            (raw, raw_rate, raw_cpu, raw_node),
            (mine, our_rate, our_cpu, our_node),
        ):
            print(
                f"| {row['name']} | {row['n']} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} "
                f"| {row['p999_ms']:.3f} | {rate:,.0f} | {cpu * 1e6:.1f} | {node * 1e6:.1f} |"
            )
        seq = {
            k: f"client {c * 1e6:.1f} µs, node {n * 1e6:.1f} µs" for k, (c, n) in SEQ_CPU.items()
        }
        print(f"CPU per sequential round trip: raw {seq['raw']}; meetq {seq['ours']}")
        print(
            f"ratio p50 ours/raw: {mine['p50_ms'] / raw['p50_ms']:.2f}x; "
            f"p50 target <= 0.5 ms: {'met' if mine['p50_ms'] <= 0.5 else 'NOT met'}; "
            f"<= 2x raw: {'met' if mine['p50_ms'] <= 2 * raw['p50_ms'] else 'NOT met'}; "
            f">= 20,000/s: {'met' if our_rate >= 20000 else 'NOT met'}"
        )
    if args.only in (None, "c"):
        rows = uvloop.run(real_models(args.model_n))
        print("| model | requests | p50 ms | p99 ms | notes |")
        print("|---|---|---|---|---|")
        for row in rows:
            notes = ""
            if "audio_s" in row:
                notes = f"{row['audio_s']:.2f} s of audio, setup {row['setup_s']:.2f} s"
            print(
                f"| {row['name']} | {row['n']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                f"| {notes} |"
            )


if __name__ == "__main__":
    main()
