"""Fixtures of the AI path: a short private socket directory and node subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("zmq")


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A socket directory short enough for ipc:// paths (sun_path is 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mqai-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


NodeFactory = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def node_process(base_dir: Path) -> Iterator[NodeFactory]:
    """Starts `meetq ai-node` processes on `base_dir`; every one is killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, unit: str = "llm", model: str = "echo") -> subprocess.Popen[bytes]:
        code = "import sys; from meetq.ai.node import run_node_from_args as r; sys.exit(r())"
        argv = [sys.executable, "-c", code, "--unit", unit, "--model", model]
        argv += ["--base-dir", str(base_dir), "--log-level", "WARNING", *args]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=dict(os.environ))
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=30)
