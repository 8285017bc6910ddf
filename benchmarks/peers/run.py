"""Side-by-side run of meetq against the established Python queues, on one private Redis.

    python benchmarks/peers/run.py                 # N=20,000 drain, 500 jobs/s for 10 s
    python benchmarks/peers/run.py --smoke         # N=2,000, 2 s of latency: a quick check
    MEETQ_BENCH_N=5000 python benchmarks/peers/run.py --peers meetq,taskiq-list,huey

What it measures, for every contender, in one run against one redis-server that it starts
on a random loopback port (and stops, even on failure):
  (b) drain: N no-op jobs (~100-byte payload) are enqueued first (enqueue/s is measured
      there), then ONE worker process is started and drains them. jobs/s runs from the first
      job's start to the last's (worker start-up excluded); worker CPU µs/job is the user+sys
      time of the worker's whole process tree over that window (celery's prefork children
      included), and Redis commands/job comes from INFO commandstats over the same window.
  (c) latency: a fresh worker, one warm-up job, then jobs at a steady rate (500/s for 10 s);
      enqueue→start latency p50/p99 from the time the enqueue call was made to the job's
      first line.
  (d) redis-benchmark LPUSH/RPOP with -P 1 and -P 64 (one client, 100-byte values): the
      physical limit of this Redis on this machine.
Every job only writes its start time into a shared mmap board (see `common.py`).

Peers run from their own venv (`.venv-bench`, `benchmarks/peers/requirements.txt`; created
here when missing), meetq from its dev venv. A contender that fails to install, start or
finish within its hard timeout is reported as such; the run goes on. Output: a markdown
table on stdout and in `benchmarks/results/peers-<date>.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from peers.common import BOARD_ENV, URL_ENV, make_board  # noqa: E402

ALL = [
    "meetq",
    "raw",
    "taskiq-list",
    "taskiq-stream",
    "huey",
    "dramatiq",
    "arq",
    "arq-poll10ms",
    "saq",
    "celery",
    "rq",
]
CONCURRENCY = {
    "meetq": "RedisMessageQueue workers=100, sync handler; enqueue = publish_batch (bulk)",
    "raw": "redis-py LPOP count=100 loop; enqueue = pipelined RPUSH (bulk)",
    "taskiq-list": "ListQueueBroker, --workers 1 --max-async-tasks 100",
    "taskiq-stream": "RedisStreamBroker, --workers 1 --max-async-tasks 100",
    "huey": "RedisHuey, consumer -k thread -w 8",
    "dramatiq": "RedisBroker, --processes 1 --threads 8",
    "arq": "max_jobs=100, poll_delay=0.5 s (default)",
    "arq-poll10ms": "max_jobs=100, poll_delay=0.01 s",
    "saq": "--workers 1, concurrency=100",
    "celery": "prefork -c 2, ignore_result",
    "rq": "SimpleWorker",
}


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers (e.g. prefork children)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="meetq-peers-") as d:
        proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                "--maxclients", "2000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if command(port, "PING") == "PONG":
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield port
        finally:
            stop_group(proc)


def command(port: int, *args: str) -> Any:
    """A minimal RESP2 client (stdlib only): one command, its reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            b = a.encode()
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        s.sendall(out)
        f = s.makefile("rb")
        return _read_reply(f)


def _read_reply(f: Any) -> Any:
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b"*":
        return [_read_reply(f) for _ in range(int(rest))]
    raise RuntimeError(f"bad reply {line!r}")


def total_commands(port: int) -> int:
    """Calls of every command so far, minus the INFO that asks."""
    info = command(port, "INFO", "commandstats")
    calls = 0
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            calls += int(line.split("calls=")[1].split(",")[0])
    return calls - 1


def redis_cpu(port: int) -> float:
    """CPU seconds the redis-server has used (user + sys, all threads)."""
    info = command(port, "INFO", "cpu")
    fields = dict(x.split(":", 1) for x in info.splitlines() if ":" in x)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def tree_cpu(root: int) -> float:
    """User+system CPU seconds of `root` and all its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(p for p, pp in parents.items() if pp == pid)
    return total


# -- one contender -------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    status: str = "ok"
    drain_rate: float | None = None
    cpu_us: float | None = None
    redis_us: float | None = None
    cmds_per_job: float | None = None
    enqueue_rate: float | None = None
    enqueue_bulk: bool = False
    p50_ms: float | None = None
    p99_ms: float | None = None
    lat_missing: int = 0
    late_pct: float = 0.0  # share of paced sends made > 10 ms after their slot
    sent_rate: float | None = None  # the rate the paced sender actually achieved
    notes: list[str] = field(default_factory=list)


@dataclass
class Ctx:
    port: int
    peer_python: str
    meetq_python: str
    n: int
    rate: float
    seconds: float
    timeout: float
    workdir: Path
    concurrent: bool = False

    def python_for(self, name: str) -> str:
        return self.meetq_python if name == "meetq" else self.peer_python

    def env(self, name: str, board: Path) -> dict[str, str]:
        env = dict(os.environ)
        env[URL_ENV] = f"redis://127.0.0.1:{self.port}/0"
        env[BOARD_ENV] = str(board)
        env["MEETQ_BENCH_VARIANT"] = name.split("-", 1)[1] if "-" in name else ""
        env["PYTHONPATH"] = os.pathsep.join(
            [str(BENCH), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        env["PYTHONUNBUFFERED"] = "1"
        return env


def read_board(path: Path, n: int) -> tuple[list[float], list[float]]:
    import array

    data = array.array("d")
    with open(path, "rb") as f:
        data.frombytes(f.read(16 * n))
    return list(data[0::2]), list(data[1::2])


def started(path: Path, n: int) -> int:
    import array

    data = array.array("d")
    with open(path, "rb") as f:
        data.frombytes(f.read(16 * n))
    return n - data[1::2].count(0.0)


def start_worker(ctx: Ctx, name: str, board: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = _worker_argv(ctx, name, board)
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=str(BENCH),
            env=ctx.env(name, board),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _worker_argv(ctx: Ctx, name: str, board: Path) -> list[str]:
    py = ctx.python_for(name)
    code = (
        "import importlib, json;"
        f"m=importlib.import_module('peers.peer_{name.split('-')[0]}');"
        f"print(json.dumps(m.worker_argv({py!r}, {str(Path(py).parent)!r})))"
    )
    out = subprocess.run(
        [py, "-c", code],
        cwd=str(BENCH),
        env=ctx.env(name, board),
        capture_output=True,
        timeout=60,
        check=True,
    )
    argv: list[str] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return argv


def run_client(ctx: Ctx, name: str, board: Path, log: Path, *args: str) -> dict[str, Any]:
    py = ctx.python_for(name)
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [py, "-m", "peers.common", *args],
            cwd=str(BENCH),
            env=ctx.env(name, board),
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=ctx.timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc, 2)
            raise TimeoutError(f"{args[0]} did not finish within {ctx.timeout:.0f}s") from None
        finally:
            stop_group(proc, 2)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {proc.returncode} (see {log})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def median_result(runs: list[Result]) -> Result:
    """Each metric's median over the successful runs (the failure when none succeeded)."""
    ok = [r for r in runs if r.status == "ok"]
    if not ok:
        return runs[-1]
    out = Result(ok[0].name, enqueue_bulk=ok[0].enqueue_bulk)
    for attr in (
        "drain_rate",
        "cpu_us",
        "redis_us",
        "cmds_per_job",
        "enqueue_rate",
        "p50_ms",
        "p99_ms",
        "sent_rate",
    ):
        values = [getattr(r, attr) for r in ok if getattr(r, attr) is not None]
        setattr(out, attr, statistics.median(values) if values else None)
    out.lat_missing = max(r.lat_missing for r in ok)
    out.late_pct = max(r.late_pct for r in ok)
    out.notes = sorted({note for r in ok for note in r.notes})
    if len(ok) > 1:
        out.notes.insert(0, f"median of {len(ok)} runs")
    if len(ok) < len(runs):
        out.notes.append(f"{len(runs) - len(ok)} run(s) failed: {runs[-1].status}")
    return out


def measure(ctx: Ctx, name: str) -> Result:
    res = Result(name)
    log = ctx.workdir / f"{name}.log"
    deadline = time.monotonic() + ctx.timeout

    # (b) enqueue N, then drain with one worker process
    command(ctx.port, "FLUSHALL")
    board = ctx.workdir / f"{name}-drain.board"
    make_board(str(board), ctx.n)
    enq = run_client(ctx, name, board, log, "enqueue", name.split("-")[0], "--n", str(ctx.n))
    res.enqueue_rate = enq["enqueued"] / enq["seconds"]
    res.enqueue_bulk = bool(enq.get("bulk"))
    worker = start_worker(ctx, name, board, log)
    try:
        while started(board, ctx.n) == 0:
            _check_alive(worker, deadline, log)
            time.sleep(0.005)
        cpu0, cmds0, done0 = tree_cpu(worker.pid), total_commands(ctx.port), started(board, ctx.n)
        rcpu0 = redis_cpu(ctx.port)
        while (done := started(board, ctx.n)) < ctx.n:
            _check_alive(worker, deadline, log, f"drained {done}/{ctx.n}")
            time.sleep(0.05)
        cpu1, cmds1, rcpu1 = tree_cpu(worker.pid), total_commands(ctx.port), redis_cpu(ctx.port)
    finally:
        stop_group(worker)
    _, starts = read_board(board, ctx.n)
    res.drain_rate = (ctx.n - 1) / (max(starts) - min(starts))
    jobs = ctx.n - done0
    res.cpu_us = (cpu1 - cpu0) * 1e6 / jobs if jobs else None
    res.cmds_per_job = (cmds1 - cmds0) / jobs if jobs else None
    res.redis_us = (rcpu1 - rcpu0) * 1e6 / jobs if jobs else None
    if jobs < ctx.n // 2:
        res.notes.append(f"CPU/commands over the last {jobs} jobs only")

    # (c) latency at a steady rate with a warm worker
    command(ctx.port, "FLUSHALL")
    m = int(ctx.rate * ctx.seconds) + 1
    board = ctx.workdir / f"{name}-latency.board"
    make_board(str(board), m)
    worker = start_worker(ctx, name, board, log)
    try:
        paced = run_client(
            ctx, name, board, log, "paced", name.split("-")[0], "--n", str(m),
            "--rate", str(ctx.rate), *(["--concurrent"] if ctx.concurrent else []),
        )  # fmt: skip
        wait_until = min(deadline, time.monotonic() + 10)
        while started(board, m) < m and time.monotonic() < wait_until:
            _check_alive(worker, deadline, log)
            time.sleep(0.05)
    finally:
        stop_group(worker)
    enqs, starts = read_board(board, m)
    lat = sorted((s - e) * 1e3 for e, s in zip(enqs[1:], starts[1:], strict=True) if s)
    res.lat_missing = (m - 1) - len(lat)
    if lat:
        res.p50_ms = statistics.median(lat)
        res.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    if res.lat_missing:
        res.notes.append(f"{res.lat_missing} of {m - 1} paced jobs never started")
    res.late_pct = 100.0 * paced.get("late", 0) / max(1, m - 1)
    res.sent_rate = (m - 1) / paced["seconds"] if paced.get("seconds") else None
    return res


def _check_alive(
    worker: subprocess.Popen[bytes], deadline: float, log: Path, what: str = ""
) -> None:
    if worker.poll() is not None:
        raise RuntimeError(f"worker exited {worker.returncode} {what} (see {log})")
    if time.monotonic() > deadline:
        raise TimeoutError(f"hard timeout {what}".strip())


def redis_benchmark(port: int, smoke: bool) -> dict[str, float]:
    """(d): requests/s of LPUSH and RPOP, one client, 100-byte values, -P 1 and -P 64."""
    exe = shutil.which("redis-benchmark")
    if not exe:
        return {}
    out: dict[str, float] = {}
    for pipeline, n in ((1, 20_000 if smoke else 100_000), (64, 200_000 if smoke else 2_000_000)):
        command(port, "FLUSHALL")
        proc = subprocess.run(
            [exe, "-h", "127.0.0.1", "-p", str(port), "-c", "1", "-P", str(pipeline),
             "-n", str(n), "-d", "100", "-t", "lpush,rpop", "--csv"],
            capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        for line in proc.stdout.decode().splitlines():
            cells = [c.strip('"') for c in line.split(",")]
            if len(cells) >= 2 and cells[0] in ("LPUSH", "RPOP"):
                out[f"{cells[0]} -P {pipeline}"] = float(cells[1])
    return out


# -- venv and report -----------------------------------------------------------------------


def ensure_peer_venv(python: Path, log: Path) -> str | None:
    """Creates the peers' venv when missing; returns an error text or None."""
    if python.exists():
        return None
    venv = python.parent.parent
    req = HERE / "requirements.txt"
    try:
        with open(log, "ab") as out:
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                stdout=out,
                stderr=out,
                timeout=300,
            )
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "-r", str(req)],
                check=True,
                stdout=out,
                stderr=out,
                timeout=900,
            )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"peer venv install failed: {exc}"
    return None


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def ratio(v: float | None, base: float | None, digits: int = 2) -> str:
    if v is None or not base:
        return "—"
    return f"{v / base:.{digits}f}×"


def report(results: list[Result], limits: dict[str, float], ctx: Ctx, argv: list[str]) -> str:
    meetq = next((r for r in results if r.name == "meetq" and r.status == "ok"), None)
    raw = next((r for r in results if r.name == "raw" and r.status == "ok"), None)
    lines = [
        f"# meetq vs established Python queues — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{' '.join(argv)}`  ",
        f"N={ctx.n:,} no-op jobs (~100-byte payload) drained by ONE worker process; "
        f"latency at {ctx.rate:g} jobs/s for {ctx.seconds:g} s; one private redis-server "
        f"({command(ctx.port, 'INFO', 'server').split('redis_version:')[1].split()[0]}) "
        f"on 127.0.0.1; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}.",
        "",
        "| system | drain jobs/s | × meetq | × raw loop | worker CPU µs/job | "
        "redis-server CPU µs/job | Redis cmds/job | enqueue/s | pickup p50 / p99 ms | "
        "concurrency | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = meetq.drain_rate if meetq else None
        enq = fmt(r.enqueue_rate) + (" (bulk)" if r.enqueue_bulk else "")
        lat = f"{fmt(r.p50_ms, 2)} / {fmt(r.p99_ms, 2)}" if r.p50_ms is not None else "—"
        notes = [*r.notes]
        if r.sent_rate is not None and r.sent_rate < 0.95 * ctx.rate:
            notes.append(f"sender reached only {r.sent_rate:,.0f} jobs/s")
        if r.late_pct >= 1:
            notes.append(f"sender >10 ms late on {r.late_pct:.0f}% of paced sends")
        status = r.status + ("; " + "; ".join(notes) if notes else "")
        lines.append(
            f"| {r.name} | {fmt(r.drain_rate)} | {ratio(r.drain_rate, base)} | "
            f"{ratio(r.drain_rate, raw.drain_rate if raw else None, 3)} | "
            f"{fmt(r.cpu_us)} | {fmt(r.redis_us)} | "
            f"{fmt(r.cmds_per_job, 2)} | "
            f"{enq} | {lat} | {CONCURRENCY.get(r.name, '')} | {status} |"
        )
    lines += [
        "",
        "`× raw loop`: drain rate over the no-library loop's (`raw`: redis-py `LPOP key 100`, "
        "job inline) in this run. CPU columns are per drained job over the drain window: the "
        "worker's whole process tree, and the redis-server. Latency runs from the enqueue call "
        "to the job's first line; a late sender (machine busy) shifts sends, not latencies.",
    ]
    if limits:
        lines += ["", "Physical limit (redis-benchmark, 1 client, 100-byte values):", ""]
        lines += ["| command | requests/s | × meetq drain |", "|---|---|---|"]
        for k, v in limits.items():
            lines.append(f"| {k} | {fmt(v)} | {ratio(v, meetq.drain_rate if meetq else None)} |")
    ok = [
        r for r in results if r.status == "ok" and r.drain_rate and r.name not in ("meetq", "raw")
    ]
    if meetq and ok:
        best = max(ok, key=lambda r: r.drain_rate or 0)
        lines += [
            "",
            f"meetq drains {ratio(meetq.drain_rate, best.drain_rate, 1)} the fastest peer "
            f"({best.name}, {fmt(best.drain_rate)} jobs/s) in this run.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=int(os.environ.get("MEETQ_BENCH_N", 0)) or None)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=None, help="latency run length (10)")
    ap.add_argument("--peers", default=",".join(ALL), help="comma-separated, default all")
    ap.add_argument("--timeout", type=float, default=300.0, help="hard timeout per contender (s)")
    ap.add_argument("--reps", type=int, default=1, help="runs per contender; medians reported")
    ap.add_argument(
        "--concurrent-sends",
        action="store_true",
        help="latency test: asyncio producers (meetq, arq, saq, taskiq) do not await one send "
        "before the next is due (needed above a few thousand jobs/s); the others still block",
    )
    ap.add_argument("--smoke", action="store_true", help="N=2,000 and 2 s of latency")
    ap.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--meetq-python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("--out", default=str(BENCH / "results"))
    args = ap.parse_args()
    n = args.n or (2_000 if args.smoke else 20_000)
    seconds = args.seconds or (2.0 if args.smoke else 10.0)

    # SIGTERM/SIGHUP/SIGINT unwind through the `finally`s: every worker and the server stop.
    # (SIGINT explicitly: a background job inherits it ignored.)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _terminate)

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="meetq-peers-work-") as work:
        workdir = Path(work)
        venv_error = None
        if any(x != "meetq" for x in names):
            venv_error = ensure_peer_venv(Path(args.peer_python), workdir / "venv.log")
        with redis_server() as port:
            ctx = Ctx(port, args.peer_python, args.meetq_python, n, args.rate, seconds,
                      args.timeout, workdir, args.concurrent_sends)  # fmt: skip
            limits = redis_benchmark(port, args.smoke)
            for name in names:
                if name != "meetq" and venv_error:
                    results.append(Result(name, status=venv_error))
                    continue
                runs: list[Result] = []
                for rep in range(args.reps):
                    print(f"… {name} ({rep + 1}/{args.reps})", file=sys.stderr, flush=True)
                    try:
                        r = measure(ctx, name)
                    except Exception as exc:  # one contender failing must not stop the run
                        tail = _log_tail(workdir / f"{name}.log")
                        r = Result(name, status=f"failed: {exc}" + (f" — {tail}" if tail else ""))
                    print(f"  {r}", file=sys.stderr, flush=True)
                    runs.append(r)
                    if r.status != "ok":
                        break
                results.append(median_result(runs))
            text = report(results, limits, ctx, ["python", *sys.argv])
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"peers-{dt.date.today():%Y-%m-%d}.md"
    path.write_text(text)
    print(f"written to {path}", file=sys.stderr)
    return 0


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _log_tail(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return " / ".join(lines[-2:])[-300:].replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main())
