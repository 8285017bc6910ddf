"""`meetq demo`: the platform's path on this machine, with live progress and a summary.

With no Redis URL it starts a private redis-server on a unix socket in a temp dir. Then:
service workers for the AI, media, meeting and signaling queues; simulated client
sessions in meetings sending a mix of AI, media, meeting and chat tasks at all four
priorities (some invalid on purpose: an unknown client type refused at the edge, corrupt
audio that fails, retries and lands in the DLQ, a type no service handles); services
emitting local bus events; scheduled meeting reminders and cleanups on the timer wheel.
Everything it starts is stopped on exit, Ctrl-C or SIGTERM (`finally` blocks, the private
server and its directory last), so no process or socket file is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meetq import LocalEventBus, Message, Priority, RedisMessageQueue, Task, TaskScheduler, backend
from meetq import events as ev
from meetq.ops.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_MISSING,
    EXIT_OK,
    CliError,
    check_redis_url,
    missing_extra,
    redis_client,
)

PRIORITY_NAMES = {p: p.name.lower() for p in Priority}

# client type -> (queue, task type), as the seed maps ai.* / media.* / meeting.* / chat.*
CLIENT_TYPES: dict[str, tuple[str, str]] = {
    "ai.speech_recognition": ("ai_tasks", "speech_recognition"),
    "ai.emotion_detection": ("ai_tasks", "emotion_detection"),
    "media.transcode": ("media_tasks", "media_processing"),
    "media.recording": ("media_tasks", "recording"),
    "meeting.mute_user": ("meeting_tasks", "meeting_control"),
    "chat.message": ("signaling_tasks", "signaling"),
}
MIX = [
    ("ai.speech_recognition", 20),
    ("ai.emotion_detection", 15),
    ("media.transcode", 15),
    ("media.recording", 5),
    ("meeting.mute_user", 15),
    ("chat.message", 26),
    ("ai.teleport", 2),  # invalid on purpose: no such client type, refused at the edge
    ("media.hologram", 1),  # invalid on purpose: routed, but no service handles it
    ("ai.speech_recognition!corrupt", 1),  # corrupt audio: fails, retries, DLQ
]
QUEUES = ("ai_tasks", "media_tasks", "meeting_tasks", "signaling_tasks")
INVALID_ROUTES = {"media.hologram": ("media_tasks", "hologram")}


@dataclass
class DemoConfig:
    duration: float = 8.0
    rate: float = 300.0
    clients: int = 24
    meetings: int = 4
    dashboard: bool = False
    dashboard_port: int = 0
    seed: int | None = None


def run_from_args(args: argparse.Namespace) -> int:
    try:
        import rich  # noqa: F401
    except ImportError as exc:
        raise missing_extra("demo", exc) from None
    import uvloop

    from meetq.ops.redis_server import RedisServerError, RedisServerMissing, private_redis

    config = DemoConfig(
        args.duration,
        args.rate,
        args.clients,
        args.meetings,
        args.dashboard,
        args.dashboard_port,
        args.seed,
    )
    with contextlib.ExitStack() as stack:
        if args.redis_url:
            url = check_redis_url(args.redis_url)
        else:
            try:
                url = stack.enter_context(private_redis())
            except RedisServerMissing as exc:
                raise CliError(str(exc), EXIT_MISSING) from None
            except RedisServerError as exc:
                raise CliError(str(exc), EXIT_FAILURE) from None
            print(f"private redis-server on {url}", file=sys.stderr, flush=True)
        try:
            return uvloop.run(_main(url, config))
        except KeyboardInterrupt:
            print("demo interrupted: everything stopped", file=sys.stderr)
            return EXIT_INTERRUPTED
    return EXIT_OK


async def _main(url: str, config: DemoConfig) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await Demo(url, config).run()
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


class Demo:
    def __init__(self, url: str, config: DemoConfig) -> None:
        from meetq.ops.demo_report import Tally

        self.url = url
        self.config = config
        self.rng = random.Random(config.seed)
        self.tally = Tally()
        self.queues: dict[str, RedisMessageQueue] = {}
        self.bus = LocalEventBus(buffer_size=4096, workers=4)
        self.scheduler = TaskScheduler(buffer_size=4096, workers=4)
        self.run_id = f"{int(time.time()) % 100000}"

    # ------------------------------------------------------------------ services

    def _service_handlers(self) -> dict[str, dict[str, Callable[[Message], Any]]]:
        t = self.tally

        def done(msg: Message, event: str) -> dict[str, Any]:
            key = (msg.payload["client_type"], PRIORITY_NAMES[msg.priority])
            t.completed[key] += 1
            t.latencies.append(time.monotonic() - msg.payload["sent"])
            self.bus.emit(event, {"task": msg.id, "meeting": msg.payload["meeting"]}, "demo")
            return {"ok": True}

        async def speech(msg: Message) -> dict[str, Any]:
            if msg.payload.get("corrupt"):
                raise ValueError("audio chunk is corrupt (bad PCM header)")
            await asyncio.sleep(self.rng.uniform(0.002, 0.008))  # latency stand-in
            return done(msg, ev.AI_TASK_COMPLETED)

        async def emotion(msg: Message) -> dict[str, Any]:
            await asyncio.sleep(self.rng.uniform(0.001, 0.004))
            return done(msg, ev.AI_TASK_COMPLETED)

        def media(msg: Message) -> dict[str, Any]:
            return done(msg, ev.STREAM_STARTED)

        def meeting(msg: Message) -> dict[str, Any]:
            return done(msg, ev.USER_JOINED)

        def chat(msg: Message) -> dict[str, Any]:
            return done(msg, "chat.message")

        return {
            "ai_tasks": {"speech_recognition": speech, "emotion_detection": emotion},
            "media_tasks": {"media_processing": media, "recording": media},
            "meeting_tasks": {"meeting_control": meeting},
            "signaling_tasks": {"signaling": chat},
        }

    async def _start_services(self, stack: contextlib.AsyncExitStack) -> None:
        client = redis_client(self.url)  # shared by the four queues, closed last
        stack.push_async_callback(client.aclose)
        for name, handlers in self._service_handlers().items():
            q = RedisMessageQueue(client, name, workers=8, retry_backoff=0.05)
            for mtype, fn in handlers.items():
                q.register_handler(mtype, fn)
            await stack.enter_async_context(q)
            self.queues[name] = q
        for event in (ev.AI_TASK_COMPLETED, ev.STREAM_STARTED, ev.USER_JOINED, "chat.message"):

            def count(e: Any, name: str = event) -> None:
                self.tally.events[f"bus {name}"] += 1

            self.bus.on(event, count)
        await stack.enter_async_context(self.bus)
        await stack.enter_async_context(self.scheduler)

    # ------------------------------------------------------------------ load

    def _sessions(self) -> list[tuple[str, int, int]]:
        c = self.config
        return [(f"sess-{i}", 1000 + i, 1 + i % c.meetings) for i in range(c.clients)]

    def _schedule(self) -> None:
        """Meeting reminders at random times of the run, and a cleanup every second."""

        def ran(task: Task) -> None:
            self.tally.scheduled_run += 1

        for m in range(1, self.config.meetings + 1):
            delay = self.rng.uniform(0.1, max(0.2, self.config.duration * 0.8))
            self.scheduler.submit(
                Task(type="meeting_reminder", handler=ran, delay=delay, payload={"meeting": m})
            )
        for s in range(int(self.config.duration)):
            self.scheduler.submit(
                Task(type="session_cleanup", handler=ran, delay=s + 1.0, priority=Priority.LOW)
            )

    def _pick(self) -> tuple[str, Priority]:
        names, weights = zip(*MIX, strict=True)
        kind = self.rng.choices(names, weights)[0]
        prio = self.rng.choices(list(Priority), [1, 3, 4, 2])[0]
        return kind, prio

    async def _load(self, on_tick: Callable[[], None]) -> None:
        sessions = self._sessions()
        rate, duration = self.config.rate, self.config.duration
        start = time.monotonic()
        sent = 0
        while True:
            now = time.monotonic()
            if now - start >= duration:
                break
            due = int((now - start) * rate) - sent
            batches: dict[str, list[Message]] = {}
            for _ in range(max(0, due)):
                kind, prio = self._pick()
                sess, user, meeting = sessions[self.rng.randrange(len(sessions))]
                corrupt = kind.endswith("!corrupt")
                kind = kind.removesuffix("!corrupt")
                route = CLIENT_TYPES.get(kind) or INVALID_ROUTES.get(kind)
                sent += 1
                if route is None:
                    self.tally.refused[kind] += 1
                    continue
                queue, mtype = route
                self.tally.sent[(kind, PRIORITY_NAMES[prio])] += 1
                payload = {
                    "client_type": kind,
                    "session": sess,
                    "user": user,
                    "meeting": meeting,
                    "sent": time.monotonic(),
                    "corrupt": corrupt,
                }
                batches.setdefault(queue, []).append(
                    Message(type=mtype, priority=prio, payload=payload, max_retries=2)
                )
            for queue, msgs in batches.items():
                await self.queues[queue].publish_batch(msgs)
            on_tick()
            await asyncio.sleep(0.01)
        self.tally.load_ended = time.monotonic()

    async def _depths(self) -> dict[str, int]:
        out = {}
        for name, q in self.queues.items():
            s = await q.get_stats()
            out[name] = s["queue_length"]["total"] + s["delayed_count"] + s["processing_count"]
        return out

    async def _drained(self) -> bool:
        dead = 0
        for q in self.queues.values():
            dead += await q.dead_letter_count()
        return sum(self.tally.completed.values()) + dead >= self.tally.sent_total()

    async def _collect_dlq(self) -> None:
        from meetq.ops.demo_report import group_reasons

        reasons = []
        for q in self.queues.values():
            offset = 0
            while True:
                page = await q.dead_letters(500, offset)
                if not page:
                    break
                offset += len(page)
                for d in page:
                    reasons.append(d.reason)
                    if d.message is not None:
                        kind = d.message.payload.get("client_type", d.message.type)
                        self.tally.failed[(kind, PRIORITY_NAMES[d.message.priority])] += 1
        self.tally.dlq_reasons = group_reasons(reasons)

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        from rich.console import Console
        from rich.live import Live

        from meetq.ops.demo_report import progress_view, summary_tables

        console = Console(stderr=True)
        console.print(
            f"[bold]meetq demo[/] — backend {backend()}, {self.config.clients} sessions in "
            f"{self.config.meetings} meetings, {self.config.rate:g} tasks/s for "
            f"{self.config.duration:g}s"
        )
        async with contextlib.AsyncExitStack() as stack:
            await self._clean_queues()
            await self._start_services(stack)
            board_url = await self._start_dashboard(stack) if self.config.dashboard else None
            if board_url:
                console.print(f"dashboard: [bold]{board_url}[/]")
            self._schedule()
            depths: dict[str, int] = {}
            with Live(console=console, refresh_per_second=8, transient=True) as live:

                def tick() -> None:
                    live.update(progress_view(self.tally, self.config.duration, depths, "load"))

                async def track() -> None:
                    while True:
                        depths.update(await self._depths())
                        await asyncio.sleep(0.25)

                tracker = asyncio.create_task(track())
                try:
                    await self._load(tick)
                    deadline = time.monotonic() + 30
                    while not await self._drained() and time.monotonic() < deadline:
                        live.update(
                            progress_view(self.tally, self.config.duration, depths, "drain")
                        )
                        await asyncio.sleep(0.05)
                finally:
                    tracker.cancel()
                    await asyncio.wait({tracker})
            drained = await self._drained()
            await self._collect_dlq()
            stats = {name: await q.get_stats() for name, q in self.queues.items()}
            retried = sum(s["total_retried"] for s in stats.values())
            bus = self.bus.get_stats()
            extra = {
                "retries": f"{retried:,}",
                "dropped events (local bus)": f"{bus['dropped_events']:,}",
                "refused at the edge": f"{sum(self.tally.refused.values()):,}",
            }
            out = Console()
            for table in summary_tables(self.tally, extra):
                out.print(table)
            for note in self.tally.notes:
                out.print(f"[dim]note:[/] {note}")
            if not drained:
                out.print("[red]not every task finished within the drain deadline[/]")
            if board_url:
                console.print(f"dashboard still on {board_url} — Ctrl-C to stop")
                await asyncio.Event().wait()
        await self._clean_queues()
        return EXIT_OK if drained else EXIT_FAILURE

    async def _clean_queues(self) -> None:
        """The demo's queues start and end empty (it may be pointed at a shared Redis)."""
        import redis.asyncio

        from meetq._redis.keys import QueueKeys

        r: redis.asyncio.Redis = redis_client(self.url)
        try:
            keys = [k for name in QUEUES for k in QueueKeys(name).all]
            await r.delete(*keys)
        finally:
            await r.aclose()

    async def _start_dashboard(self, stack: contextlib.AsyncExitStack) -> str:
        import secrets

        from meetq.ops.dashboard import Dashboard
        from meetq.ops.http import HttpServer
        from meetq.ops.metrics import MetricsHub
        from meetq.ops.queues import QueueInspector

        inspector = QueueInspector(self.url)
        stack.push_async_callback(inspector.close)
        hub = MetricsHub(inspector, QUEUES)
        hub.add_component("bus", "demo", self.bus.get_stats)
        hub.add_component("scheduler", "demo", self.scheduler.get_stats)
        token = secrets.token_urlsafe(12)
        board = Dashboard(hub, token=token, title="meetq demo")
        server = HttpServer("127.0.0.1", self.config.dashboard_port)
        hub.routes(server)
        board.routes(server)
        await board.start()
        stack.push_async_callback(board.stop)
        await server.start()
        stack.push_async_callback(server.stop)
        return f"{server.url}/#token={token}"
