"""Socket files under one base directory: claimed before bind, removed on stop.

The C++ unit-manager wedges every client when a stale `ipc://` file is left behind. Before
we bind a path we probe it with a plain AF_UNIX connect: refused means nobody listens (a
stale file from a dead process), so it is removed and logged; accepted means another live
process owns it, which is a `SocketInUseError` rather than a silent steal.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from pathlib import Path

from meetq.ai.errors import SocketInUseError, StackFlowError

log = logging.getLogger(__name__)

MAX_IPC_PATH = 107  # sun_path is 108 bytes with the terminating NUL


def ipc_url(path: Path | str) -> str:
    text = str(path)
    if len(text.encode()) > MAX_IPC_PATH:
        raise StackFlowError(f"ipc path longer than {MAX_IPC_PATH} bytes: {text}")
    return f"ipc://{text}"


def url_path(url: str) -> Path:
    if not url.startswith("ipc://"):
        raise StackFlowError(f"not an ipc:// URL: {url}")
    return Path(url[len("ipc://") :])


def claim(path: Path) -> bool:
    """Makes `path` free to bind; True when a stale file was removed."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUseError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketInUseError(f"{path}: cannot probe ({exc})") from exc
    else:
        raise SocketInUseError(f"{path} is bound by another live process")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    log.warning("removed stale socket file %s", path)
    return True


def remove(path: Path) -> None:
    """Removes a socket file this process bound (after its socket is closed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
