"""Worker processes and run-log checks for the reliability and fault-matrix tests.

A `WorkerProcess` runs tests/faults/fault_worker.py (a RedisMessageQueue in its own
process), so a test can SIGKILL, SIGSTOP or starve it like a real deployment. Its handlers
log every run to one Redis list ("S <id> <pid> <time>" when a run starts, "D ..." when it
succeeds); `RunLog` reads that list and `check_queue` states the invariants every fault must
keep: nothing lost (each published id acked once or in the DLQ with a reason) and nothing run
again after it succeeded.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio

from helpers import await_ready, spawn_script
from meetq._redis.keys import QueueKeys

WORKER = Path(__file__).parent.parent / "faults" / "fault_worker.py"


class WorkerProcess:
    """One worker subprocess; `start()` returns once its queue is started."""

    def __init__(
        self, url: str, queue: str, log_key: str, log_url: str | None = None, **config: Any
    ) -> None:
        """`config`: RedisMessageQueue keyword arguments; `log_url`: where the run log is
        written (default `url`)."""
        log = log_url or url
        self.args = [url, queue, log, log_key, orjson.dumps(config).decode()]
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        self.proc = spawn_script(WORKER, *self.args, stderr=self._stderr)
        try:
            self.pid = int(await_ready(self.proc, timeout)[0])
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.stderr()}") from None
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop) and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def close(self) -> None:
        self.kill()
        self._stderr.close()


@contextlib.contextmanager
def worker_processes(
    url: str, queue: str, log_key: str, n: int = 1, log_url: str | None = None, **config: Any
) -> Iterator[list[WorkerProcess]]:
    """`n` started workers of one queue, always killed and reaped on exit."""
    procs = [WorkerProcess(url, queue, log_key, log_url, **config) for _ in range(n)]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.close()


@dataclass
class RunLog:
    """Every handler run of every worker, in the order Redis received the log lines, with
    the time each line was written in its worker."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # each entry's time.time() in its worker

    def starts(self, mid: str) -> int:
        return sum(1 for kind, i, _ in self.entries if kind == "S" and i == mid)

    def successes(self, mid: str) -> int:
        return sum(1 for kind, i, _ in self.entries if kind == "D" and i == mid)

    @property
    def completed(self) -> set[str]:
        return {i for kind, i, _ in self.entries if kind == "D"}

    def pids(self, ids: Iterable[str]) -> set[int]:
        wanted = set(ids)
        return {pid for kind, i, pid in self.entries if kind == "D" and i in wanted}

    def reruns_after_success(self) -> set[str]:
        """Ids with a run that started after a run of theirs had already succeeded, by the
        times the workers wrote (one machine, one clock), not by the order Redis received
        the lines: a worker frozen just after starting a run sends its "S" line only once
        it resumes, after the run another worker took over and finished; that overlap is
        at-least-once, a run started after a success is not."""
        first_done: dict[str, float] = {}
        for (kind, mid, _), at in zip(self.entries, self.times, strict=True):
            if kind == "D":
                first_done[mid] = min(at, first_done.get(mid, at))
        return {
            mid
            for (kind, mid, _), at in zip(self.entries, self.times, strict=True)
            if kind == "S" and mid in first_done and at > first_done[mid]
        }


async def read_log(r: redis.asyncio.Redis, key: str) -> RunLog:
    raw = await r.lrange(key, 0, -1)
    log = RunLog()
    for line in raw:
        kind, rest = line.decode().split(" ", 1)
        mid, pid, at = rest.rsplit(" ", 2)  # an id may hold spaces (a task id names its queue)
        log.entries.append((kind, mid, int(pid)))
        log.times.append(float(at))
    return log


@dataclass
class QueueCheck:
    """The end state of a queue after a fault, against the ids published into it."""

    lost: set[str]
    dead: dict[str, str]
    unreasoned: set[str]
    processed: int
    acked: set[str]
    reruns: set[str]
    leftover: dict[str, int]

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.unreasoned
            and not self.reruns
            and self.processed == len(self.acked)
            and not any(self.leftover.values())
        )

    def describe(self) -> str:
        return (
            f"lost={sorted(self.lost)[:5]} ({len(self.lost)}) unreasoned={len(self.unreasoned)}"
            f" reruns={sorted(self.reruns)[:5]} processed={self.processed}"
            f" acked={len(self.acked)} leftover={self.leftover}"
        )


async def check_queue(
    r: redis.asyncio.Redis, queue: str, published: Iterable[str], log_key: str
) -> QueueCheck:
    """Where every published id ended up. An id is acked when its body is gone from the
    queue and some run of it succeeded; `processed` (the queue's counter of valid acks)
    must equal the number of acked ids, so none was acked twice."""
    k = QueueKeys(queue)
    ids = set(published)
    # a ready key a foreign client filled with something else holds none of our ids
    ready = [k.ready(level) for level in (3, 2, 1, 0)]
    lists = [key for key in ready if await r.type(key) in (b"list", b"none")]
    pipe = r.pipeline(transaction=True)
    pipe.hkeys(k.named("msg"))
    pipe.zrange(k.named("dlq"), 0, -1)
    pipe.hgetall(k.named("dlqinfo"))
    pipe.hget(k.named("stats"), "processed")
    for key in ready:
        if key in lists:
            pipe.llen(key)
        else:
            pipe.echo(0)
    pipe.zcard(k.named("delayed"))
    pipe.zcard(k.named("inflight"))
    res = await pipe.execute()
    stored = {x.decode(errors="replace") for x in res[0] if b"\0" not in x}
    dlq = {x.decode(errors="replace") for x in res[1]}
    dead = {}
    for raw_id, info in res[2].items():
        mid = raw_id.decode(errors="replace")
        try:
            meta = orjson.loads(info)
        except orjson.JSONDecodeError:
            meta = None
        dead[mid] = str(meta.get("reason", "")) if isinstance(meta, dict) else ""
    log = await read_log(r, log_key)
    acked = {i for i in ids if i not in stored and i in log.completed}
    in_dlq = ids & dlq
    return QueueCheck(
        lost=ids - acked - in_dlq,
        dead={i: dead.get(i, "") for i in in_dlq},
        unreasoned={i for i in in_dlq if not dead.get(i)},
        processed=int(res[3] or 0),
        acked=acked,
        reruns=log.reruns_after_success() & ids,
        leftover={
            "ready": sum(int(x) for x in res[4:8]),
            "delayed": int(res[8]),
            "inflight": int(res[9]),
        },
    )
