"""`meetq`: the command line of the platform.

    meetq demo                       the whole pipeline on this machine (private redis-server)
    meetq worker MODULE[:ATTR]       run a module's handlers on a queue (SIGTERM: graceful)
    meetq gateway / meetq ai-node    the WebSocket gateway / a StackFlow AI node
    meetq stats [QUEUE...]           depths, DLQ, counters (--watch refreshes in place)
    meetq dlq list|requeue|purge Q   browse or act on a dead-letter queue
    meetq metrics / meetq dashboard  Prometheus /metrics, the live web dashboard
    meetq bench                      run the benchmark suites, print the ratio tables

Commands that need Redis take `--redis-url` or `REDIS_URL` (default redis://127.0.0.1:6379/0).
Exit codes (scripts can rely on them): 0 ok, 1 the command failed, 2 usage or a bad URL,
3 Redis unreachable, 4 something required is missing, 5 a confirmation was declined,
130 interrupted. Errors are one line on stderr, never a traceback (`-v` logs more).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from meetq.ops.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    check_redis_url,
    missing_extra,
    unreachable,
)

DEFAULT_URL = "redis://127.0.0.1:6379/0"
log = logging.getLogger("meetq.ops.cli")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {n}")
    return n


def _non_negative_int(text: str) -> int:
    n = int(text) if text.lstrip("-").isdigit() else -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0: {text!r}")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return x


def _port(text: str) -> int:
    n = _non_negative_int(text)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meetq",
        description="meetq: the messaging layer of a real-time video-conferencing platform.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage/bad URL, 3 Redis unreachable, "
        "4 missing requirement, 5 declined, 130 interrupted.",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help=f"Redis to use (default: $REDIS_URL, else {DEFAULT_URL}; demo: a private one)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the whole platform path on this machine and print a summary",
        description="Starts a private redis-server (unless --redis-url/REDIS_URL), the "
        "services, simulated clients and events; shows live progress, then a summary table. "
        "Everything it starts is stopped on exit or Ctrl-C.",
    )
    demo.add_argument("--duration", type=_positive_float, default=8.0, help="seconds of load")
    demo.add_argument("--rate", type=_positive_float, default=100.0, help="client tasks/s")
    demo.add_argument("--clients", type=_positive_int, default=24, help="client sessions")
    demo.add_argument("--meetings", type=_positive_int, default=4, help="meetings they are in")
    demo.add_argument(
        "--dashboard",
        action="store_true",
        help="keep running with the dashboard open on a printed URL (Ctrl-C ends it)",
    )
    demo.add_argument("--dashboard-port", type=_port, default=0, help="0 picks a free port")
    demo.add_argument("--seed", type=int, default=None, help="random seed of the workload")

    worker = sub.add_parser(
        "worker",
        help="run the handlers of an importable module on a queue",
        description="Runs MODULE[:ATTR]'s handlers (default ATTR: settings) on its queue. "
        "The settings (a dict or object) name `queue` and `handlers` ({type: fn}), and "
        "optionally `workers`, `in_thread`, `queue_options`, `on_startup`, `on_shutdown`. "
        "SIGTERM/SIGINT stop it gracefully: in-flight work is finished or handed back.",
    )
    worker.add_argument("target", metavar="MODULE[:ATTR]", help="e.g. myapp.tasks:settings")
    worker.add_argument("--queue", help="override the settings' queue name")
    worker.add_argument("--workers", type=_positive_int, help="override the settings' workers")
    worker.add_argument("--metrics-port", type=_port, help="serve /metrics on this port")
    worker.add_argument("--metrics-host", default="127.0.0.1", help="address for /metrics")

    _add_delegated(
        sub,
        "gateway",
        "run the WebSocket gateway (--dashboard-port / --metrics-port: with them)",
        "Runs the client WebSocket gateway (meetq[gateway]); the remaining "
        "arguments go to the gateway's own parser (`meetq gateway --help`). With "
        "--metrics-port P or --dashboard-port D the same process also serves /metrics "
        "(and the dashboard) on that side HTTP port.",
    )
    _add_delegated(
        sub,
        "ai-node",
        "run a StackFlow AI node",
        "Runs one StackFlow AI node (meetq[ai]); the remaining arguments go to "
        "the node's own parser (`meetq ai-node --help`).",
    )

    stats = sub.add_parser(
        "stats",
        help="queue depths, in flight, delayed, DLQ and counters",
        description="Prints each queue's figures and each stream topic's groups (all "
        "found when none is named; sessions live in the gateway process: see its /metrics).",
    )
    stats.add_argument("queues", nargs="*", metavar="QUEUE")
    stats.add_argument(
        "--stream", action="append", default=[], dest="streams", help="a stream topic to show"
    )
    stats.add_argument("--json", action="store_true", help="JSON instead of a table")
    stats.add_argument(
        "--watch",
        type=_positive_float,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 2) until Ctrl-C",
    )
    stats.add_argument("--iterations", type=_positive_int, help="with --watch: stop after N")

    dlq = sub.add_parser("dlq", help="browse, requeue or purge a dead-letter queue")
    dsub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = dsub.add_parser("list", help="show dead letters, oldest first")
    dl.add_argument("queue")
    dl.add_argument("--limit", type=_positive_int, default=20, help="entries per page")
    dl.add_argument("--offset", type=_non_negative_int, default=0, help="start of the page")
    dl.add_argument("--type", default="", help="only this message type")
    dl.add_argument("--reason", default="", help="only reasons containing this text")
    dl.add_argument("--json", action="store_true")
    dr = dsub.add_parser("requeue", help="move the oldest dead letters back to ready")
    dr.add_argument("queue")
    how = dr.add_mutually_exclusive_group(required=True)
    how.add_argument("--count", type=_positive_int, help="how many (oldest first)")
    how.add_argument("--all", action="store_true", help="every dead letter")
    dp = dsub.add_parser("purge", help="delete every dead letter (asks unless --yes)")
    dp.add_argument("queue")
    dp.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    metrics = sub.add_parser(
        "metrics",
        help="serve Prometheus /metrics for queues",
        description="Serves /metrics (meetq[metrics]) for the named queues, or every queue "
        "found at start.",
    )
    _add_serve_args(metrics, port=9464)
    metrics.add_argument("--cache-ttl", type=_positive_float, default=1.0, help="seconds")

    dash = sub.add_parser(
        "dashboard",
        help="serve the live web dashboard",
        description="Serves the dashboard (meetq[dashboard]) and /metrics. Requeue and purge "
        "need the token from $MEETQ_DASHBOARD_TOKEN (a random one is made and printed in "
        "the URL when it is unset).",
    )
    _add_serve_args(dash, port=8460)
    dash.add_argument("--interval", type=_positive_float, default=1.0, help="push every N s")

    bench = sub.add_parser(
        "bench",
        help="run the benchmark suites and print the ratio tables",
        description="Runs pytest-benchmark on benchmarks/ of a source checkout, then "
        "benchmarks/report.py (the tables of BENCHMARKS.md).",
    )
    bench.add_argument("--path", help="the benchmarks/ directory (default: ./benchmarks)")
    bench.add_argument("--scale", type=_positive_float, help="MEETQ_BENCH_SCALE (0.02: smoke)")
    bench.add_argument("-k", dest="select", help="only benchmarks matching this expression")
    return parser


def _add_delegated(sub: Any, name: str, help_text: str, description: str) -> None:
    """A command whose arguments, --help included, go to the component's own parser."""
    parser = sub.add_parser(name, help=help_text, description=description, add_help=False)
    parser.add_argument("args", nargs=argparse.REMAINDER)


def _add_serve_args(parser: argparse.ArgumentParser, port: int) -> None:
    """What `metrics` and `dashboard` serve (queues, stream topics) and where."""
    parser.add_argument("--queue", action="append", default=[], dest="queues")
    parser.add_argument("--stream", action="append", default=[], dest="streams", help="topic")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=port)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Parses and runs one command; returns its exit status (see the module docstring)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command in ("gateway", "ai-node"):
        args.args = [*unknown, *args.args]  # theirs to parse, --help included
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except CliError as exc:
        print(f"meetq {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"meetq {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.verbose:
            log.exception("meetq %s failed", args.command)
        print(
            f"meetq {args.command}: {type(exc).__name__}: {exc} (-v shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


def _url(args: argparse.Namespace) -> str:
    return check_redis_url(args.redis_url or DEFAULT_URL)


def _run_async(main: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    import uvloop

    return uvloop.run(main()) or EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "demo":
        from meetq.ops import demo

        return demo.run_from_args(args)
    if cmd == "bench":
        from meetq.ops.bench import run_bench

        return run_bench(args.path, args.scale, args.select, [])
    if cmd in ("gateway", "ai-node"):
        rest = list(args.args)
        if cmd == "gateway" and args.redis_url and "--redis-url" not in rest:
            rest = ["--redis-url", _url(args), *rest]
        return _delegate(cmd, rest)
    url = _url(args)
    if cmd == "worker":
        return _run_async(lambda: _worker(url, args))
    if cmd in ("stats", "dlq"):
        return _run_async(lambda: _with_inspector(url, lambda i: _admin(i, args)))
    if cmd == "metrics":
        return _run_async(lambda: _with_inspector(url, lambda i: _serve(i, args, False)))
    if cmd == "dashboard":
        return _run_async(lambda: _with_inspector(url, lambda i: _serve(i, args, True)))
    raise CliError(f"unknown command {cmd!r}", EXIT_USAGE)


def _delegate(cmd: str, rest: list[str]) -> int:
    """`meetq gateway` / `meetq ai-node`: the component's own argument parser and runner."""
    module, entry, extra = {
        "gateway": ("meetq.gateway.server", "run_from_args", "gateway"),
        "ai-node": ("meetq.ai.node", "run_node_from_args", "ai"),
    }[cmd]
    import importlib

    if cmd == "gateway" and "--help" not in rest:
        from meetq.ops.gateway_host import wants_side_port

        if wants_side_port(rest):
            try:
                from meetq.ops import gateway_host

                return gateway_host.run(rest)
            except ModuleNotFoundError as exc:
                raise missing_extra("gateway", exc) from None
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            raise CliError(f"{cmd} is not part of this meetq build yet", EXIT_MISSING) from None
        raise missing_extra(extra, exc) from None
    runner = getattr(mod, entry, None)
    if runner is None:
        raise CliError(f"{cmd} is not part of this meetq build yet", EXIT_MISSING)
    result = runner(rest)
    return int(result or 0)


async def _ping(inspector: Any, url: str) -> None:
    """A clear one-line error (exit 3) when Redis cannot be reached, before any work."""
    from redis.exceptions import RedisError

    try:
        async with asyncio.timeout(10.0):
            await inspector.ping()
    except (OSError, RedisError, TimeoutError) as exc:
        raise unreachable(url, exc) from None


def _lost() -> tuple[type[BaseException], ...]:
    """The errors that mean the connection to Redis was lost mid-command."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from meetq.errors import MeetqConnectionError

    return (MeetqConnectionError, ConnectionError, RedisConnectionError)


async def _with_inspector(url: str, body: Callable[[Any], Awaitable[int | None]]) -> int:
    from meetq.ops.queues import QueueInspector

    inspector = QueueInspector(url)
    try:
        await _ping(inspector, url)
        try:
            return await body(inspector) or EXIT_OK
        except _lost() as exc:
            raise unreachable(url, exc) from None
    finally:
        await inspector.close()


async def _admin(inspector: Any, args: argparse.Namespace) -> int:
    from meetq.ops import admin

    if args.command == "stats":
        # named topics; none when only queues are named; else every topic found
        streams = args.streams or ([] if args.queues else None)
        await admin.stats(
            inspector, args.queues, args.json, args.watch, args.iterations, streams=streams
        )
    elif args.action == "list":
        await admin.dlq_list(
            inspector, args.queue, args.limit, args.offset, args.type, args.reason, args.json
        )
    elif args.action == "requeue":
        await admin.dlq_requeue(inspector, args.queue, args.count, args.all)
    else:
        await admin.dlq_purge(inspector, args.queue, args.yes)
    return EXIT_OK


async def _serve(inspector: Any, args: argparse.Namespace, dashboard: bool) -> int:
    try:
        from meetq.ops.http import HttpServer
        from meetq.ops.metrics import MetricsHub
    except ImportError as exc:
        raise missing_extra("dashboard" if dashboard else "metrics", exc) from None
    queues = args.queues or await inspector.discover()
    hub = MetricsHub(inspector, queues, cache_ttl=getattr(args, "cache_ttl", 1.0))
    for topic in args.streams or (await inspector.discover_streams() if not args.queues else []):
        hub.watch_stream(topic)
    server = HttpServer(args.host, args.port)
    hub.routes(server)
    board = None
    url_suffix = "/metrics"
    if dashboard:
        import secrets

        from meetq.ops.dashboard import Dashboard

        token = os.environ.get("MEETQ_DASHBOARD_TOKEN") or secrets.token_urlsafe(16)
        board = Dashboard(hub, token=token, interval=args.interval)
        board.routes(server)
        await board.start()
        url_suffix = "/" if os.environ.get("MEETQ_DASHBOARD_TOKEN") else f"/#token={token}"
    try:
        await server.start()
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    print(f"serving {server.url}{url_suffix} ({len(queues)} queue(s))", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if board is not None:
            await board.stop()
        await server.stop()
    return EXIT_OK


async def _worker(url: str, args: argparse.Namespace) -> int:
    from meetq.ops.queues import QueueInspector
    from meetq.ops.worker import load_settings, run_worker

    settings = load_settings(args.target)
    if args.queue:
        settings.queue = args.queue
    if args.workers:
        settings.workers = args.workers
    probe = QueueInspector(url)
    try:
        await _ping(probe, url)
    finally:
        await probe.close()
    try:
        await run_worker(url, settings, args.metrics_port, args.metrics_host)
    except _lost() as exc:
        raise unreachable(url, exc) from None
    except ImportError as exc:
        raise missing_extra("metrics", exc) from None
    return EXIT_OK


__all__ = ["EXIT_MISSING", "build_parser", "main", "run"]
