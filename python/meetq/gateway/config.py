"""`GatewayConfig`: the gateway's knobs (limits, keepalive, timeouts, buffer sizes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    max_frame_size: int = 64 * 1024
    max_connections: int = 20_000
    connects_per_second: float = 2000.0
    max_sessions_per_user: int = 8
    max_send_bytes: int = 256 * 1024
    max_frames_per_second: float = 200.0
    ping_interval: float = 20.0
    ping_jitter: float = 0.25
    ping_timeout: float = 10.0
    default_timeout: float = 30.0
    max_timeout: float = 300.0
    read_buffer_size: int = 1024
    reconnect_after: float = 1.0
    accepted_hold: float = 0.005
    """A published request's `accepted` waits this long (up to twice) for its final frame,
    to share its write; 0: sent as soon as the task is published."""


__all__ = ["GatewayConfig"]
