"""The `meetq` command line: help, exit codes, one-line errors, stats and the DLQ."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from clirun import meetq, one_line_error, write_module

from helpers import RedisServer, async_wait_until, free_port, redis_client
from meetq import Message, Priority, RedisMessageQueue
from meetq.ops.cli import build_parser
from meetq.ops.common import (
    EXIT_DECLINED,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    check_redis_url,
)

COMMANDS = ["demo", "worker", "stats", "dlq", "metrics", "dashboard", "bench"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"meetq {command}" in out and "-h, --help" in out


@pytest.mark.parametrize("action", ["list", "requeue", "purge"])
def test_dlq_actions_have_help(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["dlq", action, "--help"])
    assert exc.value.code == 0
    assert f"meetq dlq {action}" in capsys.readouterr().out


def test_top_level_help_lists_commands_and_exit_codes() -> None:
    proc = meetq("--help")
    assert proc.returncode == 0
    for command in [*COMMANDS, "gateway", "ai-node"]:
        assert command in proc.stdout
    assert "3 Redis unreachable" in proc.stdout


def test_import_meetq_loads_no_optional_part() -> None:
    code = (
        "import sys, meetq, meetq.ops.cli\n"
        "bad = [m for m in ('prometheus_client', 'rich', 'playwright', 'websockets', 'zmq')"
        " if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:6379",
        "redis://localhost:notaport/0",
        "redis://localhost:6379/abc",
        "unix://",
    ],
)
def test_bad_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(CliError) as exc:
        check_redis_url(url)
    assert exc.value.code == EXIT_USAGE
    proc = meetq("--redis-url", url, "stats")
    assert proc.returncode == EXIT_USAGE
    assert "bad Redis URL" in one_line_error(proc)


def test_unreachable_redis_is_one_line_and_exit_3(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    write_module(tmp_path, "wsettings", "settings = {'queue': 'q', 'handlers': {'t': print}}\n")
    env = {"PYTHONPATH": str(tmp_path)}
    for args in (["stats"], ["dlq", "list", "q"], ["metrics"], ["worker", "wsettings"]):
        proc = meetq("--redis-url", url, *args, env=env)
        assert proc.returncode == EXIT_UNREACHABLE, (args, proc.stderr)
        assert "cannot reach Redis at" in one_line_error(proc)


def test_redis_url_comes_from_the_environment(redis_url: str) -> None:
    proc = meetq("stats", "--json", "nothing_here", env={"REDIS_URL": redis_url})
    assert proc.returncode == EXIT_OK, proc.stderr
    assert orjson.loads(proc.stdout)["queues"][0]["name"] == "nothing_here"


@pytest.mark.parametrize(
    "args",
    [
        ["dlq", "requeue", "q", "--count", "0"],
        ["dlq", "requeue", "q", "--count", "-3"],
        ["dlq", "requeue", "q", "--count", "many"],
        ["dlq", "requeue", "q"],
        ["dlq", "list", "q", "--limit", "0"],
        ["dlq", "list", "q", "--offset", "-1"],
        ["stats", "--watch", "0"],
        ["demo", "--rate", "-5"],
        ["nosuchcommand"],
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    proc = meetq("--redis-url", "redis://127.0.0.1:1/0", *args)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr


def test_components_not_in_this_build_say_so() -> None:
    import importlib.util

    for command, module in (("gateway", "meetq.gateway.server"), ("ai-node", "meetq.ai.node")):
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is not None:
            continue  # the component has landed: its own tests cover its entry point
        proc = meetq(command)
        assert proc.returncode == EXIT_MISSING
        assert "not part of this meetq build" in one_line_error(proc)


async def _fill(url: str, queue: str, ready: int, dead: int) -> None:
    """`ready` messages waiting and `dead` in the DLQ (a type no handler takes)."""
    async with RedisMessageQueue(url, queue, workers=2) as q:
        q.register_handler("known", lambda m: None)
        await q.publish_batch(
            [Message(type="unknown", payload={"i": i}, priority=Priority.HIGH) for i in range(dead)]
        )
        await async_wait_until(lambda: _count(q, dead), timeout=20)
    q = RedisMessageQueue(url, queue)  # never started: publishes, consumes nothing
    try:
        await q.publish_batch(
            [
                Message(type="known", payload={"i": i}, priority=Priority(i % 4))
                for i in range(ready)
            ]
        )
    finally:
        await q.stop()


async def _count(q: RedisMessageQueue, n: int) -> bool:
    return await q.dead_letter_count() >= n


async def test_stats_table_and_json(redis_server: RedisServer) -> None:
    await _fill(redis_server.url, "orders", ready=8, dead=3)
    proc = meetq("--redis-url", redis_server.url, "stats", "--json")
    assert proc.returncode == 0, proc.stderr
    data = orjson.loads(proc.stdout)
    (q,) = [x for x in data["queues"] if x["name"] == "orders"]
    assert q["ready_total"] == 8 and q["dead_letters"] == 3
    assert q["ready"] == {"critical": 2, "high": 2, "normal": 2, "low": 2}
    table = meetq("--redis-url", redis_server.url, "stats", "orders")
    assert table.returncode == 0
    header, _, row = table.stdout.splitlines()[:3]
    assert header.split()[:5] == ["queue", "critical", "high", "normal", "low"]
    assert row.split()[:9] == ["orders", "2", "2", "2", "2", "0", "0", "3", row.split()[8]]


def _read_under_pty(args: list[str]) -> str:
    """Runs `python -m meetq ARGS` with a pseudo-terminal as stdout; returns the screen."""
    import os
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meetq", *args], stdout=slave, stderr=subprocess.PIPE
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        assert proc.wait(30) == 0
        os.close(master)
    return b"".join(chunks).decode()


async def test_stats_watch_refreshes_in_place(redis_server: RedisServer) -> None:
    """--watch redraws on a terminal: run it under a pty and read its frames."""
    await _fill(redis_server.url, "watched", ready=1, dead=0)
    args = ["--redis-url", redis_server.url, "stats", "watched", "--watch", "0.2"]
    screen = _read_under_pty([*args, "--iterations", "3"])
    assert screen.count("\x1b[H\x1b[2J") == 3  # cursor home + clear before each frame
    assert screen.count("watched") >= 3


async def test_dlq_list_requeue_purge(redis_server: RedisServer) -> None:
    url = redis_server.url
    await _fill(url, "jobs", ready=0, dead=5)
    listed = meetq("--redis-url", url, "dlq", "list", "jobs", "--json", "--limit", "2")
    page = orjson.loads(listed.stdout)
    assert page["total"] == 5 and len(page["entries"]) == 2 and page["next_offset"] == 2
    assert "no handler" in page["entries"][0]["reason"]
    filtered = meetq("--redis-url", url, "dlq", "list", "jobs", "--json", "--type", "nope")
    assert orjson.loads(filtered.stdout)["entries"] == []
    text = meetq("--redis-url", url, "dlq", "list", "jobs")
    assert text.returncode == 0 and "5 shown of 5" in text.stdout

    moved = meetq("--redis-url", url, "dlq", "requeue", "jobs", "--count", "2")
    assert moved.returncode == 0 and "requeued 2" in moved.stdout
    async with redis_client(url) as r:
        assert await r.zcard("meetq:{jobs}:dlq") == 3

    declined = meetq("--redis-url", url, "dlq", "purge", "jobs", input="n\n")
    assert declined.returncode == EXIT_DECLINED
    assert "nothing removed" in declined.stderr
    eof = meetq("--redis-url", url, "dlq", "purge", "jobs", stdin=subprocess.DEVNULL)
    assert eof.returncode == EXIT_DECLINED
    async with redis_client(url) as r:
        assert await r.zcard("meetq:{jobs}:dlq") == 3
    confirmed = meetq("--redis-url", url, "dlq", "purge", "jobs", input="y\n")
    assert confirmed.returncode == 0 and "purged 3" in confirmed.stdout
    async with redis_client(url) as r:
        assert await r.llen("meetq:{jobs}:ready:2") == 2  # the requeued ones wait again
    await _fill(url, "jobs2", ready=0, dead=2)
    forced = meetq("--redis-url", url, "dlq", "purge", "jobs2", "--yes", stdin=subprocess.DEVNULL)
    assert forced.returncode == 0 and "purged 2" in forced.stdout
    everything = meetq("--redis-url", url, "dlq", "requeue", "jobs2", "--all")
    assert everything.returncode == 0 and "empty" in everything.stdout


def test_gateway_command_is_the_gateways_own_entry_point() -> None:
    import importlib.util

    if importlib.util.find_spec("meetq.gateway") is None:
        pytest.skip("the gateway is not in this build")
    proc = meetq("gateway", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: meetq gateway" in proc.stdout and "--secret-env" in proc.stdout
    no_secret = meetq("gateway", env={"MEETQ_GATEWAY_SECRET": ""})
    assert no_secret.returncode != 0
    assert "secret" in no_secret.stderr and "Traceback" not in no_secret.stderr


async def test_stats_shows_stream_groups(redis_server: RedisServer) -> None:
    from test_metrics import _stream_with_backlog

    await _stream_with_backlog(redis_server.url, "meeting_events")
    proc = meetq("--redis-url", redis_server.url, "stats")
    assert proc.returncode == 0, proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("meeting_events")]
    assert row.split() == ["meeting_events", "media-service", "5", "1", "2", "2", "1"]
    data = orjson.loads(meetq("--redis-url", redis_server.url, "stats", "--json").stdout)
    assert data["streams"][0]["groups"]["media-service"] == {"lag": 2, "pending": 2, "consumers": 1}
    only_queue = meetq("--redis-url", redis_server.url, "stats", "--json", "q1")
    assert orjson.loads(only_queue.stdout)["streams"] == []
