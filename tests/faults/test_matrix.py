"""The fault and bad-input matrix (issue 12, "Beyond these cases").

Every public Redis-backed component that exists is driven through each fault; after each,
three things must hold, checked from Redis and from the handlers' run log (see
tests/support/fault_workers.py):

- nothing lost: every published message ends acked exactly once (the queue's `processed`
  counter equals the number of ids acked) or in the DLQ with a reason;
- nothing run again after it succeeded (a kill or stop may re-run only what had finished
  and not yet been acked when the process died: at-least-once, named per case);
- every worker serving again without a restart (each live worker runs some of a burst of
  probe messages published after the fault).

Components: RedisMessageQueue (every case) and TaskDispatcher + ServiceWorker (SIGKILL and
SIGSTOP of a worker process, every task's final response reaching the dispatcher once).
Process faults (SIGKILL, SIGSTOP past the visibility timeout, Redis restart, proxy cut and
silence, replica promotion) run two worker processes under a backlog; bad input (garbage in
every key the queue owns, handlers that raise, hang, return unencodable values or raise
unprintable exceptions) runs two queue instances in this process. The table of outcomes is
printed after the run (tests/faults/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from fault_workers import QueueCheck, RunLog, WorkerProcess, check_queue, read_log, worker_processes
from helpers import RedisServer, async_wait_until, redis_client, tcp_addrs, until_disconnected
from meetq import Message, RedisMessageQueue, ServiceRoute, TaskDispatcher, TaskRequest
from meetq._redis.keys import QueueKeys
from proxy import Proxy

COMPONENT = "RedisMessageQueue"
BACKLOG = 200
PROBES = 40
WORKER_CONFIG: dict[str, Any] = {
    "workers": 4,
    "prefetch": 4,
    "visibility_timeout": 1.0,
    "retry_backoff": 0.01,
    "block_timeout": 0.5,
}

Record = Callable[[str, str, str, str], None]


@dataclass
class Fault:
    """What a fault left for the checks: the ids it may re-run (finished in a process it
    killed or stopped, not yet acked), the workers expected to serve afterwards, and the
    path the test reaches Redis by afterwards (a promotion moves it)."""

    procs: list[WorkerProcess]
    direct: str
    proxy: Proxy | None = None
    server: RedisServer | None = None
    replica: RedisServer | None = None
    may_rerun: set[str] = field(default_factory=set)
    in_flight_at_fault: set[str] = field(default_factory=set)
    resumed_at: float = 0.0  # time.time() of a SIGCONT
    note: str = ""

    def frozen_unacked(self, log: RunLog) -> set[str]:
        """Ids a stopped worker finished before its SIGCONT, whose "D" line (and maybe the
        ack) had not left it when it froze: at-least-once re-runs, like `_finished_unacked`
        finds among the lines that had arrived by then."""
        if not self.resumed_at:
            return set()
        victim = self.procs[0].pid
        return {
            mid
            for (kind, mid, pid), at in zip(log.entries, log.times, strict=True)
            if kind == "D"
            and pid == victim
            and at < self.resumed_at
            and mid in self.in_flight_at_fault
        }

    @property
    def live(self) -> list[WorkerProcess]:
        return [p for p in self.procs if p.alive()]


def _outcome(check: QueueCheck, not_serving: list[int]) -> str:
    problems = []
    if check.lost:
        problems.append(f"lost {len(check.lost)}")
    if check.unreasoned:
        problems.append(f"{len(check.unreasoned)} DLQ entries without reason")
    if check.reruns:
        problems.append(f"{len(check.reruns)} re-run after success")
    if check.processed != len(check.acked):
        problems.append(f"processed {check.processed} != acked {len(check.acked)}")
    if any(check.leftover.values()):
        problems.append(f"left over {check.leftover}")
    if not_serving:
        problems.append(f"{len(not_serving)} worker(s) not serving")
    return "; ".join(problems) or "ok"


def _rerun_note(check: QueueCheck, log: RunLog, ctx: Fault) -> str:
    """What the run log says of each re-run, for the table: whether it was in flight when
    the fault struck, and its run lines in the order Redis received them (kind, pid, and
    when the worker wrote it, relative to a SIGCONT)."""
    if not check.reruns:
        return ""
    victim = ctx.procs[0].pid if ctx.procs else 0

    def line(n: int) -> str:
        kind, _, pid = log.entries[n]
        at = f" {log.times[n] - ctx.resumed_at:+.3f}s" if ctx.resumed_at else ""
        return f"{kind} {'victim' if pid == victim else pid}{at}"

    notes = []
    for mid in sorted(check.reruns)[:3]:
        lines = ", ".join(line(n) for n, e in enumerate(log.entries) if e[1] == mid)
        where = " (in flight at the fault)" if mid in ctx.in_flight_at_fault else ""
        notes.append(f"{mid.split('@')[0][-6:]}{where}: {lines}")
    return " re-runs: " + "; ".join(notes)


async def _judge(
    r: redis.asyncio.Redis, queue: str, ids: list[str], probes: list[str], log_key: str, ctx: Fault
) -> tuple[str, str]:
    """The checks of every process case once it settled: its outcome and the table's note
    (at-least-once re-runs the fault allows, the log lines of any other re-run)."""
    check = await check_queue(r, queue, ids + probes, log_key)
    log = await read_log(r, log_key)
    ctx.may_rerun |= ctx.frozen_unacked(log)
    check.reruns -= ctx.may_rerun
    served = log.pids(probes)
    outcome = _outcome(check, [p.pid for p in ctx.live if p.pid not in served])
    note = _rerun_note(check, log, ctx).strip()
    if ctx.may_rerun:
        note = f"{note} at-least-once re-runs allowed: {len(ctx.may_rerun)}".strip()
    return outcome, note


def _failure(outcome: str, exc: BaseException) -> str:
    """The outcome of a case that raised: what it was waiting for, or what raised."""
    if isinstance(exc, AssertionError) and "condition not met" in str(exc):
        return "timed out waiting (messages unfinished or a worker not serving)"
    return f"raised {type(exc).__name__}" if outcome in ("ok", "did not finish") else outcome


@dataclass
class Verdict:
    outcome: str = "did not finish"
    note: str = ""


@contextlib.contextmanager
def recorded(record: Record, component: str, case: str) -> Iterator[Verdict]:
    """The case's row of the table, written whatever happens; the case passes only as "ok"."""
    verdict = Verdict()
    try:
        yield verdict
    except BaseException as exc:
        verdict.outcome = _failure(verdict.outcome, exc)
        raise
    finally:
        record(component, case, verdict.outcome, verdict.note)
    assert verdict.outcome == "ok", verdict.outcome


async def _stop_live(ctx: Fault) -> None:
    """Every worker still alive stops cleanly (SIGTERM, exit code 0)."""
    loop = asyncio.get_running_loop()
    for p in ctx.live:
        code = await loop.run_in_executor(None, p.stop)
        assert code == 0, p.stderr()


async def _quiet(call: Callable[[], Awaitable[Any]]) -> Any:
    """A poll that tolerates the test's own client meeting the fault (restart, promotion)."""
    try:
        return await call()
    except (RedisConnectionError, OSError, redis.exceptions.ReadOnlyError):
        return False


async def _in_flight(r: redis.asyncio.Redis, name: str) -> set[str]:
    raw = await r.zrange(QueueKeys(name).named("inflight"), 0, -1)
    return {x.decode() for x in raw}


async def _finished_unacked(r: redis.asyncio.Redis, name: str, log_key: str, pid: int) -> set[str]:
    """Ids process `pid` ran to success whose ack had not reached Redis: the at-least-once
    re-runs a kill or stop of that process may cause."""
    log = await read_log(r, log_key)
    mine = {i for kind, i, p in log.entries if kind == "D" and p == pid}
    return mine & await _in_flight(r, name)


def _stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state in ("T", "t")


async def _settled(r: redis.asyncio.Redis, name: str, ids: list[str], log_key: str) -> bool:
    check = await check_queue(r, name, ids, log_key)
    return not check.lost and not any(check.leftover.values())


async def run_process_case(
    record: Record,
    case: str,
    direct: str,
    worker_url: str,
    fault: Callable[[Fault, redis.asyncio.Redis, str, str], Awaitable[None]],
    *,
    fault_ctx: dict[str, Any] | None = None,
    log_url: str | None = None,
    **config: Any,
) -> None:
    """Two worker processes on a backlog; `fault` strikes once 40 messages are done. The
    workers log what they ran to `log_url` (default `direct`, out of the fault's reach)."""
    name, log_key = f"m-{case}", f"m-{case}:log"
    cfg = {**WORKER_CONFIG, **config}
    with (
        recorded(record, COMPONENT, case) as verdict,
        worker_processes(worker_url, name, log_key, n=2, log_url=log_url or direct, **cfg) as procs,
    ):
        ctx = Fault(procs, direct, **(fault_ctx or {}))
        publisher = RedisMessageQueue(direct, name, retry_budget=30.0)
        async with redis_client(direct) as r:
            backlog = [Message(type="ok", payload={"sleep": 0.02}) for _ in range(BACKLOG)]
            ids = await publisher.publish_batch(backlog)
            await async_wait_until(lambda: _done_at_least(r, log_key, 40), timeout=30)
            await fault(ctx, r, name, log_key)
        await publisher.stop()
        publisher = RedisMessageQueue(ctx.direct, name, retry_budget=30.0)
        async with redis_client(ctx.direct) as r:
            await async_wait_until(
                lambda: _quiet(lambda: _settled(r, name, ids, log_key)), timeout=40
            )
            probes = await publisher.publish_batch(
                [Message(type="ok", payload={"sleep": 0.05}) for _ in range(PROBES)]
            )
            await async_wait_until(lambda: _done(r, log_key, probes), timeout=60)
            await async_wait_until(lambda: _settled(r, name, ids + probes, log_key), timeout=30)
            verdict.outcome, judged = await _judge(r, name, ids, probes, log_key, ctx)
            verdict.note = f"{ctx.note} {judged}".strip()
        await publisher.stop()
        await _stop_live(ctx)


async def _done_at_least(r: redis.asyncio.Redis, log_key: str, n: int) -> bool:
    return len((await read_log(r, log_key)).completed) >= n


async def _done(r: redis.asyncio.Redis, log_key: str, ids: list[str]) -> bool:
    return (await read_log(r, log_key)).completed >= set(ids)


# ---------------------------------------------------------------- process faults


async def _sigkill(ctx: Fault, r: redis.asyncio.Redis, name: str, log_key: str) -> None:
    victim = ctx.procs[0]
    addrs = tcp_addrs(victim.pid)
    victim.signal(signal.SIGKILL)
    await asyncio.get_running_loop().run_in_executor(None, victim.kill)
    await until_disconnected(r, addrs)  # its last log line or ack may still be executed
    ctx.may_rerun = await _finished_unacked(r, name, log_key, victim.pid)


async def _sigstop(ctx: Fault, r: redis.asyncio.Redis, name: str, log_key: str) -> None:
    victim = ctx.procs[0]
    victim.signal(signal.SIGSTOP)
    await async_wait_until(lambda: _stopped(victim.pid), timeout=10)
    ctx.may_rerun = await _finished_unacked(r, name, log_key, victim.pid)
    ctx.in_flight_at_fault = await _in_flight(r, name)
    # the fault itself: frozen for three visibility timeouts while the other worker serves
    await asyncio.sleep(3 * WORKER_CONFIG["visibility_timeout"])
    ctx.resumed_at = time.time()
    victim.signal(signal.SIGCONT)


async def _restart(ctx: Fault, r: redis.asyncio.Redis, name: str, log_key: str) -> None:
    assert ctx.server is not None
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ctx.server.kill)
    await loop.run_in_executor(None, ctx.server.start)


async def _cut(ctx: Fault, r: redis.asyncio.Redis, name: str, log_key: str) -> None:
    assert ctx.proxy is not None
    ctx.proxy.cut()


async def _silence(ctx: Fault, r: redis.asyncio.Redis, name: str, log_key: str) -> None:
    assert ctx.proxy is not None
    ctx.proxy.silence()


async def _promote(ctx: Fault, r: redis.asyncio.Redis, name: str, log_key: str) -> None:
    """A coordinated failover (FAILOVER: the primary waits for the replica to catch up,
    then they swap roles), and the address the workers use moves to the new primary; the
    workers' open connections still reach the old one, now a replica (READONLY)."""
    assert ctx.proxy is not None and ctx.replica is not None
    await r.execute_command("FAILOVER", "TO", "127.0.0.1", ctx.replica.port, "TIMEOUT", 10000)
    async with redis_client(ctx.replica.url) as new:
        await async_wait_until(lambda: _is_primary(new), timeout=20)
    ctx.proxy.target_port = ctx.replica.port
    ctx.direct = ctx.replica.url


async def _is_primary(r: redis.asyncio.Redis) -> bool:
    info = await r.info("replication")
    return bool(info["role"] == "master")


@pytest.mark.slow
async def test_sigkill_mid_run(redis_url: str, matrix: Record) -> None:
    await run_process_case(matrix, "SIGKILL mid-run", redis_url, redis_url, _sigkill)


@pytest.mark.slow
async def test_sigstop_past_the_visibility_timeout(redis_url: str, matrix: Record) -> None:
    await run_process_case(matrix, "SIGSTOP 3x visibility, SIGCONT", redis_url, redis_url, _sigstop)


@pytest.mark.slow
async def test_redis_restart(redis_factory: Callable[..., RedisServer], matrix: Record) -> None:
    server = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    await run_process_case(
        matrix,
        "Redis restart (AOF)",
        server.url,
        server.url,
        _restart,
        fault_ctx={"server": server},
        visibility_timeout=5.0,
    )


@pytest.mark.slow
async def test_proxy_cut(redis_server: RedisServer, matrix: Record) -> None:
    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        await run_process_case(
            matrix, "proxy cut", redis_server.url, url, _cut, fault_ctx={"proxy": proxy}
        )
    finally:
        await proxy.stop()


@pytest.mark.slow
async def test_proxy_silence(redis_server: RedisServer, matrix: Record) -> None:
    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        # leases longer than the 5 s in which a silent connection is noticed and replaced
        await run_process_case(
            matrix,
            "proxy silence",
            redis_server.url,
            url,
            _silence,
            fault_ctx={"proxy": proxy},
            visibility_timeout=8.0,
        )
    finally:
        await proxy.stop()


@pytest.mark.slow
async def test_replica_promotion(redis_factory: Callable[..., RedisServer], matrix: Record) -> None:
    primary = redis_factory()
    replica = redis_factory("--replicaof", "127.0.0.1", str(primary.port))
    async with redis_client(replica.url) as r:
        await async_wait_until(lambda: _in_sync(r), timeout=20)
    proxy = Proxy(primary.port)
    await proxy.start()
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        await run_process_case(
            matrix,
            "replica promotion (FAILOVER)",
            primary.url,
            url,
            _promote,
            fault_ctx={"proxy": proxy, "replica": replica},
            log_url=url,  # the workers' log follows the move too (the old primary is read-only)
            visibility_timeout=5.0,
        )
    finally:
        await proxy.stop()


async def _in_sync(r: redis.asyncio.Redis) -> bool:
    info = await r.info("replication")
    return bool(info.get("master_link_status") == "up")


# ---------------------------------------------------------------- bad input, in this process


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Outlandish(BaseException):
    pass


async def run_input_case(
    record: Record,
    redis_url: str,
    case: str,
    spoil: Callable[[redis.asyncio.Redis, QueueKeys], Awaitable[None]] | None = None,
    bad: list[Message] | None = None,
    expect_dead: int = 0,
    **config: Any,
) -> None:
    """Two queue instances on one queue: `spoil` writes garbage into its keys as a foreign
    client would, `bad` messages go in among good ones; the garbage and the bad messages end
    in the DLQ with a reason (`expect_dead` entries), the good ones are acked once, and both
    instances serve a burst of probes afterwards."""
    name, log_key = f"in-{case}", f"in-{case}:log"
    k = QueueKeys(name)
    queues = [RedisMessageQueue(redis_url, name, **{**WORKER_CONFIG, **config}) for _ in range(2)]
    with recorded(record, COMPONENT, case) as verdict:
        async with redis_client(redis_url) as r, contextlib.AsyncExitStack() as stopping:
            for number, q in enumerate(queues, 1):
                _register(q, r, log_key, number)
                stopping.push_async_callback(q.stop)
            if spoil is not None:
                await spoil(r, k)
            # DLQ entries a foreign client wrote carry no reason of ours
            foreign = {
                x.decode(errors="backslashreplace") for x in await r.zrange(k.named("dlq"), 0, -1)
            }
            good = await queues[0].publish_batch(
                [Message(type="ok", payload={"sleep": 0.01}) for _ in range(50)]
            )
            bad_ids = [await queues[0].publish(m) for m in bad or []]
            async with contextlib.AsyncExitStack() as stack:
                for q in queues:
                    await stack.enter_async_context(q)
                await async_wait_until(lambda: _done(r, log_key, good), timeout=20)
                await async_wait_until(lambda: _dlq_at_least(r, k, expect_dead), timeout=20)
                probes = await queues[0].publish_batch(
                    [Message(type="ok", payload={"sleep": 0.05}) for _ in range(PROBES)]
                )
                await async_wait_until(lambda: _done(r, log_key, probes), timeout=20)
                await async_wait_until(
                    lambda: _settled(r, name, good + bad_ids + probes, log_key), timeout=20
                )
            check = await check_queue(r, name, good + bad_ids + probes, log_key)
            served = (await read_log(r, log_key)).pids(probes)
            not_serving = [n for n in (1, 2) if n not in served]
            outcome = _outcome(check, not_serving)
            dead = {e.id: e.reason for e in await queues[0].dead_letters(100)}
            if len(dead) != expect_dead or not all(w for i, w in dead.items() if i not in foreign):
                outcome = f"{outcome}; DLQ {dead}" if outcome != "ok" else f"DLQ {dead}"
            verdict.outcome = outcome


async def _dlq_at_least(r: redis.asyncio.Redis, k: QueueKeys, n: int) -> bool:
    return bool(await r.zcard(k.named("dlq")) >= n)


def _register(q: RedisMessageQueue, r: redis.asyncio.Redis, log_key: str, number: int) -> None:
    """The handlers of one in-process worker; `number` stands for its pid in the run log."""

    async def log(kind: str, msg: Message) -> None:
        await r.rpush(log_key, f"{kind} {msg.id} {number} {time.time():.3f}")

    async def ok(msg: Message) -> None:
        await log("S", msg)
        await asyncio.sleep(float(msg.payload.get("sleep", 0)))
        await log("D", msg)

    async def raising(msg: Message) -> None:
        raise RuntimeError("handler exploded")

    async def hang(msg: Message) -> None:
        await asyncio.Event().wait()

    async def unencodable(msg: Message) -> Any:
        return {"value": object()}

    async def unprintable(msg: Message) -> None:
        raise Unprintable()

    def sync_unprintable(msg: Message) -> None:
        raise Unprintable()

    def outlandish(msg: Message) -> None:
        raise Outlandish()

    q.register_handler("ok", ok)
    q.register_handler("raise", raising)
    q.register_handler("hang", hang)
    q.register_handler("unencodable", unencodable)
    q.register_handler("unprintable", unprintable)
    q.register_handler("sync_unprintable", sync_unprintable)
    q.register_handler("base_exc", outlandish)


def _body(msg: Message) -> bytes:
    return b"1" + orjson.dumps(msg.to_dict())


async def _ready_garbage(r: redis.asyncio.Redis, k: QueueKeys) -> None:
    huge = b"h" * (1 << 20)
    await r.hset(k.named("msg"), mapping={b"\xff\xfe": _body(Message(type="ok")), huge: b"1{}"})
    await r.rpush(k.ready(1), b"\xff\xfe", huge, b"no-body")
    await r.hset(k.ready(0), "a", "hash where a list belongs")


async def _msg_garbage(r: redis.asyncio.Redis, k: QueueKeys) -> None:
    bodies = {
        "undecodable": b"1\xff\xfe\x00",
        "not-an-object": b"1[1, 2]",
        "no-type": b'1{"payload": {}}',
        "empty": b"",
        "huge": b"1" + b"x" * (2 << 20),
        "bad-priority": b'9{"type": "ok", "priority": 17}',
    }
    await r.hset(k.named("msg"), mapping=bodies)
    await r.rpush(k.ready(1), *bodies)


async def _inflight_garbage(r: redis.asyncio.Redis, k: QueueKeys) -> None:
    await r.zadd(k.named("inflight"), {b"gone": 0, b"\xfe\xff": 0})
    await r.hset(k.named("msg"), mapping={b"\xfe\xff": _body(Message(type="ok"))})


async def _delayed_garbage(r: redis.asyncio.Redis, k: QueueKeys) -> None:
    await r.zadd(k.named("delayed"), {b"gone-too": 0, b"\xfa\xfb": 0})


async def _dlq_garbage(r: redis.asyncio.Redis, k: QueueKeys) -> None:
    await r.zadd(k.named("dlq"), {b"no-body": 1, b"\xf0\xf1": 2, b"bad-info": 3})
    await r.hset(k.named("msg"), mapping={b"bad-info": b"1\xff"})
    await r.hset(k.named("dlqinfo"), mapping={b"bad-info": b"{not json", b"\xf0\xf1": b"[]"})


async def _stats_garbage(r: redis.asyncio.Redis, k: QueueKeys) -> None:
    await r.hset(k.named("stats"), mapping={"seq": "garbage", "published": "x", "processed": "1.5"})


async def _wake_garbage(r: redis.asyncio.Redis, k: QueueKeys) -> None:
    await r.hset(k.named("wake"), "not", "a list")


# far ahead, so their done hashes are live whenever the test runs
_DONE_SECONDS = (4102444800, 4102444801)


async def _done_garbage(r: redis.asyncio.Redis, k: QueueKeys) -> None:
    await r.set(k.done(_DONE_SECONDS[0]), "a string where a hash belongs")
    st2 = f"st-2.{_DONE_SECONDS[1]}@x"
    await r.hset(k.done(_DONE_SECONDS[1]), mapping={st2: "\xff{not json", st2 + "\0r": "?"})


GARBAGE = {
    "garbage: ready lists": (_ready_garbage, 3),
    "garbage: msg hash": (_msg_garbage, 6),
    "garbage: inflight": (_inflight_garbage, 2),
    "garbage: delayed": (_delayed_garbage, 2),
    "garbage: dlq + dlqinfo": (_dlq_garbage, 3),
    "garbage: stats": (_stats_garbage, 0),
    "garbage: wake": (_wake_garbage, 0),
}


@pytest.mark.parametrize("case", list(GARBAGE))
async def test_garbage_in_a_key(redis_url: str, matrix: Record, case: str) -> None:
    spoil, dead = GARBAGE[case]
    await run_input_case(matrix, redis_url, case, spoil, expect_dead=dead)


async def test_garbage_in_done_hashes(redis_url: str, matrix: Record) -> None:
    reply = "meetq:{in-garbage: done hashes}:reply:w"
    ids = [f"st-{i}.{second}@x" for i, second in enumerate(_DONE_SECONDS, 1)]
    bad = [Message(type="ok", id=mid, reply_to=reply) for mid in ids]
    # the two still run and are acked, their outcomes recorded over the garbage
    await run_input_case(matrix, redis_url, "garbage: done hashes", _done_garbage, bad, 0)
    async with redis_client(redis_url) as r:
        k = QueueKeys("in-garbage: done hashes")
        for mid, second in zip(ids, _DONE_SECONDS, strict=True):
            record = await r.hget(k.done(second), mid)
            assert record is not None and orjson.loads(record)["status"] == "completed"


HANDLERS = {
    "handler raises": (Message(type="raise", max_retries=1), "RuntimeError: handler exploded"),
    "handler hangs": (Message(type="hang", timeout=0.3), "timed out"),
    "handler result unencodable": (
        Message(type="unencodable", reply_to="meetq:{in-handler result unencodable}:reply:w"),
        "serializ",
    ),
    "handler raises unprintable (async)": (Message(type="unprintable"), "unprintable"),
    "handler raises unprintable (sync)": (Message(type="sync_unprintable"), "unprintable"),
    "handler raises BaseException": (Message(type="base_exc"), "Outlandish"),
}


@pytest.mark.parametrize("case", list(HANDLERS))
async def test_bad_handler(redis_url: str, matrix: Record, case: str) -> None:
    msg, reason = HANDLERS[case]
    bad = [Message(**{**_fields(msg), "id": f"bad-{i}"}) for i in range(2)]
    name = f"in-{case}"
    await run_input_case(matrix, redis_url, case, None, bad, expect_dead=2)
    q = RedisMessageQueue(redis_url, name)
    try:
        for entry in await q.dead_letters(10):
            assert reason in entry.reason, entry.reason
    finally:
        await q.stop()


def _fields(msg: Message) -> dict[str, Any]:
    return {f: getattr(msg, f) for f in ("type", "timeout", "max_retries", "reply_to")}


# ---------------------------------------------------------------- TaskDispatcher + ServiceWorker

DISPATCHED = 120


async def run_dispatch_case(
    record: Record,
    case: str,
    url: str,
    fault: Callable[[Fault, redis.asyncio.Redis, str, str], Awaitable[None]],
) -> None:
    """A TaskDispatcher in this process, two ServiceWorker processes; `fault` strikes once
    40 tasks are done. Every task must end COMPLETED (its final response reaching the
    dispatcher once), besides the queue's own checks."""
    queue, log_key = f"d-{case}", f"d-{case}:log"
    route = ServiceRoute(service_name="fault-service", queue_name=queue, task_types=["job"])
    cfg = {**WORKER_CONFIG, "service": "fault-service"}
    cfg.pop("retry_backoff")
    with (
        recorded(record, "TaskDispatcher + ServiceWorker", case) as verdict,
        worker_processes(url, queue, log_key, n=2, log_url=url, **cfg) as procs,
    ):
        ctx = Fault(procs, url)
        finals: dict[str, Any] = {}
        async with TaskDispatcher(url, routes=[route]) as d, redis_client(url) as r:

            def final(resp: Any) -> None:
                finals.setdefault(resp.task_id, []).append(resp)

            async def dispatch(n: int, pause: float) -> list[str]:
                reqs = [
                    TaskRequest(type="job", payload={"sleep": pause}, timeout=60) for _ in range(n)
                ]
                return [x.task_id for x in await d.dispatch_batch(reqs, final)]

            ids = await dispatch(DISPATCHED, 0.02)
            await async_wait_until(lambda: _done_at_least(r, log_key, 40), timeout=30)
            await fault(ctx, r, queue, log_key)
            await async_wait_until(lambda: set(finals) >= set(ids), timeout=60)
            probes = await dispatch(PROBES, 0.05)
            await async_wait_until(lambda: set(finals) >= set(ids + probes), timeout=60)
            await async_wait_until(lambda: _settled(r, queue, ids + probes, log_key), 30)
            outcome, verdict.note = await _judge(r, queue, ids, probes, log_key, ctx)
            bad = {
                t: [str(x.status) for x in v]
                for t, v in finals.items()
                if len(v) != 1 or str(v[0].status) != "completed"
            }
            if bad:
                extra = f"{len(bad)} tasks not completed once: {list(bad.items())[:3]}"
                outcome = extra if outcome == "ok" else f"{outcome}; {extra}"
            verdict.outcome = outcome
        await _stop_live(ctx)


@pytest.mark.slow
async def test_dispatch_sigkill_mid_run(redis_url: str, matrix: Record) -> None:
    await run_dispatch_case(matrix, "SIGKILL mid-run", redis_url, _sigkill)


@pytest.mark.slow
async def test_dispatch_sigstop_past_the_visibility_timeout(redis_url: str, matrix: Record) -> None:
    await run_dispatch_case(matrix, "SIGSTOP 3x visibility, SIGCONT", redis_url, _sigstop)
