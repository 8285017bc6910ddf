"""`meetq demo` as a user runs it: to its summary with exit 0, or interrupted by Ctrl-C;
either way no redis-server or AI node process and no socket file is left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_until


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            out += [int(c) for c in children.read_text().split()]
    return out


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "meetq", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _socket_of(line: str) -> Path:
    m = re.search(r"unix://(\S+)", line)
    assert m, line
    return Path(m.group(1))


def _started(proc: subprocess.Popen[str]) -> tuple[Path, Path | None]:
    """Reads stderr until the demo runs: its Redis socket and its AI nodes' directory."""
    assert proc.stderr is not None
    sock = _socket_of(proc.stderr.readline())
    ai_dir = None
    while "meetq demo" not in (line := proc.stderr.readline()):
        assert line, "the demo ended before it ran"
        if m := re.search(r"AI nodes \(.*\) under (\S+)", line):
            ai_dir = Path(m.group(1))
    return sock, ai_dir


def test_demo_runs_to_its_summary_and_cleans_up() -> None:
    proc = _spawn("--duration", "2", "--rate", "100", "--clients", "6", "--seed", "7")
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    sock = _socket_of(err.splitlines()[0])
    assert not sock.exists() and not sock.parent.exists()
    assert "tasks by type and priority" in out
    assert "achieved rate" in out and "p50 / p99" in out
    assert "ai.teleport (refused)" in out  # invalid on purpose, refused at the edge
    assert "events: bus ai.task_completed" in out and "scheduled tasks run" in out
    heard = re.search(r"pubsub meeting_events: published / heard\s*│\s*(\d+) / (\d+)", out)
    consumed = re.search(r"stream media_events: published / consumed\s*│\s*(\d+) / (\d+)", out)
    assert heard and consumed, out
    assert int(consumed.group(1)) == int(consumed.group(2)) > 0  # durable: every one
    assert int(heard.group(2)) > 0
    for kind in ("ai.speech_recognition", "media.transcode", "meeting.mute_user", "chat.message"):
        assert kind in out
    assert "path: WebSocket gateway" in err
    assert "gateway sessions / bad frames" in out


def test_ctrl_c_stops_everything() -> None:
    proc = _spawn("--duration", "60", "--rate", "100")
    try:
        sock, ai_dir = _started(proc)
        redis_pids = wait_until(lambda: _children(proc.pid), timeout=30)
        assert ai_dir is None or len(redis_pids) == 4  # redis-server and the 3 AI nodes
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert not sock.exists() and not sock.parent.exists()
    assert ai_dir is None or not ai_dir.exists()
    for pid in redis_pids:
        assert not _alive(pid)


def test_sigterm_stops_everything_too() -> None:
    proc = _spawn("--duration", "60", "--rate", "50")
    try:
        sock, ai_dir = _started(proc)
        redis_pids = wait_until(lambda: _children(proc.pid), timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert not sock.parent.exists()
    assert ai_dir is None or not ai_dir.exists()
    assert not any(_alive(p) for p in redis_pids)
