"""`meetq worker MODULE:ATTR`: runs the handlers of an importable module on a queue.

Like `arq` or `celery -A`, the worker's configuration is a plain Python object in the
user's code, a dict or any object with these attributes:

    queue       = "ai_tasks"                     # required
    handlers    = {"speech_recognition": fn}     # required: type -> handler(msg)
    workers     = 4                              # concurrent async/thread handlers
    in_thread   = {"speech_recognition"}         # types whose sync handler runs off-loop
    queue_options = {"visibility_timeout": 30}   # more RedisMessageQueue keyword arguments
    on_startup  = async_fn  / on_shutdown = async_fn   # optional, awaited around the run

`MODULE` alone looks for an attribute named `settings`. SIGTERM or SIGINT stops the
worker gracefully: `RedisMessageQueue.stop()` hands back unstarted messages and lets the
running handlers finish (within `stop_grace`), so nothing is lost.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meetq.ops.common import EXIT_MISSING, EXIT_USAGE, CliError
from meetq.queue import Message, RedisMessageQueue

log = logging.getLogger("meetq.ops.worker")

Observe = Callable[[str, str, float], None]


@dataclass(slots=True)
class WorkerSettings:
    queue: str
    handlers: dict[str, Callable[[Message], Any]]
    workers: int = 4
    in_thread: frozenset[str] = frozenset()
    queue_options: dict[str, Any] = field(default_factory=dict)
    on_startup: Callable[[], Awaitable[Any]] | None = None
    on_shutdown: Callable[[], Awaitable[Any]] | None = None


def load_settings(target: str) -> WorkerSettings:
    """Imports `module[:attr]` and checks the settings' shape (exit 4 / exit 2 if bad)."""
    module_name, _, attr = target.partition(":")
    attr = attr or "settings"
    if not module_name:
        raise CliError(f"bad worker target {target!r}: expected MODULE[:ATTR]", EXIT_USAGE)
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`, the current directory is importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}", EXIT_MISSING) from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise CliError(f"{module_name!r} has no attribute {attr!r}", EXIT_USAGE)

    def get(name: str, default: Any = None) -> Any:
        if isinstance(obj, Mapping):
            return obj.get(name, default)
        return getattr(obj, name, default)

    queue = get("queue")
    if not isinstance(queue, str) or not queue:
        raise CliError(f"{target}: `queue` must be a non-empty string", EXIT_USAGE)
    handlers = get("handlers")
    if not isinstance(handlers, Mapping) or not handlers:
        raise CliError(f"{target}: `handlers` must map message types to callables", EXIT_USAGE)
    for mtype, fn in handlers.items():
        if not isinstance(mtype, str) or not callable(fn):
            raise CliError(f"{target}: handler for {mtype!r} is not callable", EXIT_USAGE)
    workers = get("workers", 4)
    if not isinstance(workers, int) or workers <= 0:
        raise CliError(f"{target}: `workers` must be a positive integer", EXIT_USAGE)
    options = get("queue_options", {}) or {}
    if not isinstance(options, Mapping):
        raise CliError(f"{target}: `queue_options` must be a dict", EXIT_USAGE)
    return WorkerSettings(
        queue=queue,
        handlers=dict(handlers),
        workers=workers,
        in_thread=frozenset(get("in_thread", ()) or ()),
        queue_options=dict(options),
        on_startup=get("on_startup"),
        on_shutdown=get("on_shutdown"),
    )


def timed(handler: Callable[[Message], Any], observe: Callable[[float], None]) -> Any:
    """`handler` reporting its run time, keeping its kind (sync stays sync, async async)."""
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def run_async(msg: Message) -> Any:
            t0 = time.perf_counter()
            try:
                return await handler(msg)
            finally:
                observe(time.perf_counter() - t0)

        return run_async

    @functools.wraps(handler)
    def run_sync(msg: Message) -> Any:
        t0 = time.perf_counter()
        try:
            return handler(msg)
        finally:
            observe(time.perf_counter() - t0)

    return run_sync


def build_queue(
    redis_url: str, settings: WorkerSettings, observe: Observe | None = None
) -> RedisMessageQueue:
    try:
        q = RedisMessageQueue(
            redis_url, settings.queue, workers=settings.workers, **settings.queue_options
        )
    except (TypeError, ValueError) as exc:
        raise CliError(f"bad queue settings for {settings.queue!r}: {exc}", EXIT_USAGE) from None
    for mtype, fn in settings.handlers.items():
        handler = fn
        if observe is not None:
            handler = timed(fn, functools.partial(observe, settings.queue, mtype))
        q.register_handler(mtype, handler, in_thread=mtype in settings.in_thread)
    return q


async def run_worker(
    redis_url: str, settings: WorkerSettings, metrics_port: int | None, metrics_host: str
) -> None:
    """Runs until SIGTERM/SIGINT, then stops gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT):

        def on_signal(s: signal.Signals = sig) -> None:
            received.append(s.name)
            stop.set()

        loop.add_signal_handler(sig, on_signal)
    server = hub = None
    observe: Observe | None = None
    if metrics_port is not None:
        from meetq.ops.http import HttpServer
        from meetq.ops.metrics import MetricsHub
        from meetq.ops.queues import QueueInspector

        hub = MetricsHub(QueueInspector(redis_url), [settings.queue])

        def observe_run(queue: str, mtype: str, seconds: float) -> None:
            hub.handler_duration.labels(queue, mtype).observe(seconds)

        observe = observe_run
        server = HttpServer(metrics_host, metrics_port)
        hub.routes(server)
    q = build_queue(redis_url, settings, observe)
    try:
        if settings.on_startup is not None:
            await settings.on_startup()
        await q.start()
        if server is not None:
            await server.start()
            print(f"metrics on {server.url}/metrics", file=sys.stderr, flush=True)
        print(
            f"worker on queue {settings.queue!r}: {len(settings.handlers)} handler type(s), "
            f"{settings.workers} workers; SIGTERM stops it gracefully",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        log.info("stopping on %s", received[0] if received else "request")
        print(f"stopping ({received[0]}): finishing in-flight work", file=sys.stderr, flush=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if server is not None:
            await server.stop()
        await q.stop()
        if hub is not None and hub.inspector is not None:
            await hub.inspector.close()
        if settings.on_shutdown is not None:
            await settings.on_shutdown()
    print("worker stopped", file=sys.stderr, flush=True)
