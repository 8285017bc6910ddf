"""Runs `python -m meetq ...` as a real subprocess, the way a shell script would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def meetq(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "meetq", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
        **kw,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr, asserted to be a single line and no traceback."""
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(source)
    return path
