"""The client side (extra `meetq[gateway]`): sessions, auth, frames and the WebSocket server.

`ClientTaskManager` and the auth/frames modules need nothing beyond the core; the server
(picows) is imported on first use of `GatewayServer`, `GatewayConfig` or `serve`.
"""

from __future__ import annotations

import importlib
from typing import Any

from meetq.gateway.auth import AuthError, HmacAuthenticator, Identity, make_token
from meetq.gateway.sessions import (
    ClientTaskManager,
    ClientTaskRequest,
    ClientTaskResponse,
    SessionLimitError,
    UnknownTaskTypeError,
)

_SERVER_NAMES = ("GatewayConfig", "GatewayServer", "serve", "run_from_args")


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        return getattr(importlib.import_module("meetq.gateway.server"), name)
    raise AttributeError(f"module 'meetq.gateway' has no attribute {name!r}")


__all__ = [
    "AuthError",
    "ClientTaskManager",
    "ClientTaskRequest",
    "ClientTaskResponse",
    "GatewayConfig",
    "GatewayServer",
    "HmacAuthenticator",
    "Identity",
    "SessionLimitError",
    "UnknownTaskTypeError",
    "make_token",
    "run_from_args",
    "serve",
]
