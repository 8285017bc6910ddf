"""`meetq demo`: the platform's path on this machine, with live progress and a summary.

With no Redis URL it starts a private redis-server on a unix socket in a temp dir. Then
three AI node processes (PocketSphinx speech recognition, VADER sentiment and a latency
stand-in: demo_ai) and the AIService on `ai_tasks`, the media, meeting and signaling
workers, the dispatcher, the session manager and the WebSocket gateway with N simulated
client sessions in M meetings (real WebSocket connections). They send a mix of AI,
media, meeting and chat tasks at all four priorities: voice commands spoken by espeak-ng
as real 16 kHz PCM, chat lines for sentiment, and some tasks invalid on purpose (an
unknown type refused at the edge, a frame that is not JSON, corrupt audio, an
unsupported codec); the media service dispatches flaky recordings with retries. Services
emit local bus events; reminders and cleanups run on the scheduler's timer wheel. The
summary says what each voice command was recognised as and how VADER scored each chat
line.

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
from dataclasses import dataclass
from typing import Any

from meetq import LocalEventBus, Priority, Task, TaskScheduler, backend
from meetq import events as ev
from meetq.ops.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_MISSING,
    EXIT_OK,
    CliError,
    check_redis_url,
    missing_extra,
)
from meetq.ops.demo_ai import CHAT_LINES, CORRUPT_AUDIO, DemoAI

PRIORITIES = ("critical", "high", "normal", "low")
MIX = [  # client kind, weight; "!" marks what is invalid on purpose
    ("ai.speech_recognition", 2),  # a spoken voice command: real ASR, ~0.2 s of CPU each
    ("ai.emotion_detection", 15),  # a chat line: VADER
    ("ai.audio_denoising", 18),  # the latency stand-in node (no denoising model)
    ("media.transcode", 15),
    ("meeting.mute_user", 15),
    ("chat.message", 26),
    ("recording (server side)", 4),  # the media service dispatches it, with retries
    ("ai.teleport", 2),  # ! no such client type: refused at the edge
    ("media.hologram", 1),  # ! a codec no media service has: fails
    ("ai.speech_recognition!corrupt", 1),  # ! corrupt audio: fails
    ("(not JSON)", 1),  # ! a frame that is not JSON (gateway path only)
]
SERVICE_EVENTS = {
    "ai-service": ev.AI_TASK_COMPLETED,  # emitted by the AIService's event callback
    "media-service": ev.STREAM_STARTED,
    "meeting-service": ev.USER_JOINED,
    "signaling-service": "chat.message",
}


@dataclass
class DemoConfig:
    duration: float = 8.0
    rate: float = 100.0
    clients: int = 24
    meetings: int = 4
    dashboard: bool = False
    dashboard_port: int = 0
    seed: int | None = None


def run_from_args(args: argparse.Namespace) -> int:
    try:
        # the platform's path: clients over WebSockets (websockets) to the gateway (picows)
        import picows  # noqa: F401
        import rich  # noqa: F401
        import websockets  # noqa: F401
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
    previous = signal.signal(signal.SIGTERM, _interrupt)  # during start-up too
    try:
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
            ai, note = _start_ai(stack)
            demo = Demo(url, config, ai)
            if note:
                demo.tally.notes.append(note)
            return uvloop.run(_main(demo))
    except KeyboardInterrupt:
        print("demo interrupted: everything stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _start_ai(stack: contextlib.ExitStack) -> tuple[DemoAI | None, str | None]:
    """The AI node processes and the spoken commands, or why there are none."""
    from meetq.ops.demo_ai import AiNodes, AiNodeStartError, ai_missing, render_voice_commands

    missing = ai_missing()
    if missing:
        return None, missing
    nodes = AiNodes()
    try:
        base_dir = stack.enter_context(nodes)
    except AiNodeStartError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    print(
        f"AI nodes (asr, sentiment, latency stand-in) under {base_dir}", file=sys.stderr, flush=True
    )
    voice, note = render_voice_commands()
    return DemoAI(base_dir, voice, pids=nodes.pids), note


async def _main(demo: Demo) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await demo.run()
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


class Demo:
    def __init__(self, url: str, config: DemoConfig, ai: DemoAI | None = None) -> None:
        from meetq.ops.demo_report import Tally

        self.url = url
        self.config = config
        self.ai = ai
        self.mix = [(k, w) for k, w in MIX if ai is not None or not k.startswith("ai.")]
        self._spoken = self._chats = 0  # round robin over the phrases and chat lines
        self.rng = random.Random(config.seed)
        self.tally = Tally()
        self.bus = LocalEventBus(buffer_size=4096, workers=4)
        self.scheduler = TaskScheduler(buffer_size=4096, workers=4)
        self._dispatches: set[asyncio.Future[None]] = set()
        from meetq.ops.demo_events import EventFanout

        self.fanout = EventFanout(url, self.tally)
        handlers = self._service_handlers()
        from meetq.ops.demo_gateway import GatewayPath

        ai_service = None
        if ai is not None:

            def ai_service() -> Any:
                assert ai is not None
                return ai.service(url, self._ai_event)

        self.path = GatewayPath(url, self.tally, handlers, ai_service)

    # ------------------------------------------------------------------ services

    def _service_handlers(self) -> dict[str, dict[str, Any]]:
        """The media, meeting and signaling services' work (the AI service runs real
        models on its nodes: demo_ai); each emits its service's bus event."""
        rng, bus = random.Random(self.config.seed), self.bus

        def emitted(service: str, data: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
            bus.emit(SERVICE_EVENTS[service], {"meeting": data.get("meeting")}, service)
            return result

        def media(data: dict[str, Any]) -> dict[str, Any]:
            if data.get("codec") == "hologram":
                raise ValueError("unsupported codec 'hologram'")
            return emitted("media-service", data, {"transcoded": True})

        def recording(data: dict[str, Any]) -> dict[str, Any]:
            if rng.random() < 0.35:  # a flaky disk: retried with backoff, a few die
                raise OSError("recording store unavailable")
            return emitted("media-service", data, {"stored": True})

        def meeting(data: dict[str, Any]) -> dict[str, Any]:
            return emitted("meeting-service", data, {"muted": data.get("target")})

        def chat(data: dict[str, Any]) -> dict[str, Any]:
            return emitted("signaling-service", data, {"delivered": True})

        return {
            "media-service": {"media_processing": media, "recording": recording},
            "meeting-service": {"meeting_control": meeting},
            "signaling-service": {"signaling": chat},
        }

    def _ai_event(self, name: str, payload: dict[str, Any]) -> None:
        """The AIService's events go out on the local bus like the other services'."""
        self.bus.emit(
            name, {"task": payload.get("task_id"), "type": payload.get("type")}, "ai-service"
        )

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        for event in SERVICE_EVENTS.values():

            def count(e: Any, name: str = event) -> None:
                self.tally.events[f"bus {name}"] += 1

            self.bus.on(event, count)
        await stack.enter_async_context(self.bus)
        await stack.enter_async_context(self.scheduler)
        await self.fanout.start(stack, self.bus)
        c = self.config
        sessions = [(1000 + i, 1 + i % c.meetings) for i in range(c.clients)]
        await self.path.start(stack, sessions)

    # ------------------------------------------------------------------ load

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

    def _one(self, i: int) -> None:
        """Task number i: the first ones go once through every kind and priority (so any
        run shows each of them, the invalid ones included), then a weighted draw."""
        names, weights = zip(*self.mix, strict=True)
        if i < len(self.mix):
            kind, prio = names[i], PRIORITIES[i % 4]
        else:
            kind = self.rng.choices(names, weights)[0]
            prio = self.rng.choices(PRIORITIES, [1, 3, 4, 2])[0]
        session = self.rng.randrange(self.config.clients)
        data: dict[str, Any] = {"meeting": 1 + session % self.config.meetings, "chunk": i}
        if kind.endswith("!corrupt"):
            kind, data["audio"] = kind.removesuffix("!corrupt"), CORRUPT_AUDIO
        elif kind == "ai.speech_recognition":
            if not self.ai or not self.ai.voice:
                return  # no speech to send (the note says why)
            said = list(self.ai.voice)[self._spoken % len(self.ai.voice)]
            self._spoken += 1
            data.update(audio=self.ai.voice[said], said=said)
        elif kind == "ai.emotion_detection":
            data["text"] = CHAT_LINES[self._chats % len(CHAT_LINES)]
            self._chats += 1
        elif kind == "ai.audio_denoising":
            data["text"] = f"audio frame {i}"
        if kind == "media.hologram":
            data["codec"] = "hologram"
        if kind == "recording (server side)":
            task = asyncio.ensure_future(self.path.server_side(kind, prio, data))
            self._dispatches.add(task)
            task.add_done_callback(self._dispatches.discard)
            return
        self.path.send(session, kind, prio, data)

    async def _load(self, on_tick: Any) -> None:
        rate, duration = self.config.rate, self.config.duration
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < duration:
            due = int((time.monotonic() - start) * rate) - sent
            for _ in range(max(0, due)):
                self._one(sent)
                sent += 1
            flush = getattr(self.path, "flush", None)
            if flush is not None:
                await flush()
            on_tick()
            await asyncio.sleep(0.01)
        self.tally.load_ended = time.monotonic()

    async def _dead_letters(self) -> int:
        from meetq.ops.queues import QueueInspector

        inspector = QueueInspector(self.url)
        try:
            return sum([(await inspector.snapshot(n)).dead_letters for n in self.queue_names])
        finally:
            await inspector.close()

    @property
    def queue_names(self) -> list[str]:
        return list(self.path.queue_names)

    async def _drained(self) -> bool:
        t = self.tally
        if not self.fanout.delivered():
            return False
        if self.path.outstanding() >= 0:
            return self.path.outstanding() == 0 and t.finished_total() >= t.sent_total()
        return sum(t.completed.values()) + await self._dead_letters() >= t.sent_total()

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        from rich.console import Console

        console = Console(stderr=True)
        c = self.config
        console.print(
            f"[bold]meetq demo[/] — backend {backend()}, {c.clients} sessions in "
            f"{c.meetings} meetings, {c.rate:g} tasks/s for {c.duration:g}s"
        )
        async with contextlib.AsyncExitStack() as stack:
            from meetq.ops.demo_run import clean_queues, dashboard, live_load, summarize

            await clean_queues(self.url)
            await self._start(stack)
            console.print(f"path: {self.path.name}")
            board_url = await dashboard(self, stack) if c.dashboard else None
            if board_url:
                console.print(f"dashboard: [bold]{board_url}[/]")
            self._schedule()
            drained = await live_load(self, console)
            await summarize(self, drained)
            if board_url:
                console.print(f"dashboard still on {board_url} — Ctrl-C to stop")
                await asyncio.Event().wait()
        await clean_queues(self.url)
        return EXIT_OK if drained else EXIT_FAILURE
