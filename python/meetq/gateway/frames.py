"""The gateway's JSON frames, sans I/O: parsing and validating what clients send, encoding
what the gateway sends. Nothing here knows about sockets, so every rule is tested on bytes.

In (a text frame, one JSON object):

    {"request_id": "r1", "type": "ai.speech_recognition", "data": {...},
     "priority": "high", "timeout": 30}

`request_id` (1-128 printable characters) and `type` are required; `data` defaults to {},
`priority` to "normal", `timeout` to the gateway's default (0 < timeout <= max_timeout).

Out: `{"request_id", "status": "accepted"}` as soon as a request is taken, then exactly one
final `{"request_id", "status": "success"|"error"|"timeout", "data"|"error", "processed_at"}`.
A frame the gateway refuses gets `{"request_id" (when known), "status": "error",
"code", "error"}` with one of the `ErrorCode`s. Server notices carry `"type"` instead of a
request id: `welcome` (the session id to resume with) and `reconnect` (graceful shutdown).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from meetq.priority import Priority

MAX_REQUEST_ID = 128


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_FRAME = "invalid_frame"
    BINARY_FRAME = "binary_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_TYPE = "unknown_type"
    TOO_MANY_REQUESTS = "too_many_requests"
    DUPLICATE_REQUEST = "duplicate_request"
    UNAVAILABLE = "unavailable"


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses (4xxx: application-defined)."""

    NORMAL = 1000
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    FLOOD = 4008
    """More frames per second than the per-connection limit."""
    SLOW_CONSUMER = 4009
    """The client stopped reading: its send queue passed the byte bound."""
    IDLE = 4010
    """No pong within the keepalive timeout."""


class FrameError(Exception):
    """A client frame the gateway refuses; `request_id` is set when it could be read."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(slots=True)
class RequestFrame:
    request_id: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    timeout: float = 0.0
    """0: the gateway's default."""


_PRIORITY_NAMES: dict[str, Priority] = {
    **{p.name.lower(): p for p in Priority},
    **{p.name: p for p in Priority},
}
"""The usual spellings, looked up before `Priority.parse` (which takes any case)."""
_PRIORITY_INTS: dict[int, Priority] = {int(p): p for p in Priority}


def _priority(raw: Any) -> Priority:
    """A frame's priority: a name in any case or 0-3; raises ValueError (bools too)."""
    kind = type(raw)
    if kind is str:
        found = _PRIORITY_NAMES.get(raw)
        return found if found is not None else Priority.parse(raw)
    if kind is int:  # exactly int: a bool is not a priority
        found = _PRIORITY_INTS.get(raw)
        if found is not None:
            return found
    raise ValueError(raw)


def parse_request(raw: bytes | str, max_size: int, max_timeout: float = 300.0) -> RequestFrame:
    """Validates one text frame; raises FrameError (with the request id when readable).
    Type checks are exact (`type(x) is str`): orjson only makes the exact built-in types."""
    if len(raw) > max_size:
        raise FrameError(ErrorCode.FRAME_TOO_LARGE, f"frame over {max_size} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError(ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None
    if type(obj) is not dict:
        raise FrameError(ErrorCode.INVALID_FRAME, "a frame must be a JSON object")
    rid = obj.get("request_id")
    if type(rid) is not str or not 0 < len(rid) <= MAX_REQUEST_ID or not rid.isprintable():
        raise FrameError(
            ErrorCode.INVALID_FRAME, f"request_id must be 1-{MAX_REQUEST_ID} printable characters"
        )
    ftype = obj.get("type")
    if type(ftype) is not str or not ftype:
        raise FrameError(ErrorCode.INVALID_FRAME, "type must be a non-empty string", rid)
    data = obj.get("data")
    if data is None:
        data = {}
    elif type(data) is not dict:
        raise FrameError(ErrorCode.INVALID_FRAME, "data must be an object", rid)
    raw_priority = obj.get("priority", "normal")
    try:
        priority = _priority(raw_priority)
    except ValueError:
        raise FrameError(
            ErrorCode.INVALID_FRAME, "priority must be low, normal, high or critical", rid
        ) from None
    timeout = obj.get("timeout")
    if timeout is None:
        timeout = 0.0
    else:
        kind = type(timeout)
        if kind is not int and kind is not float:  # a bool is not a number here
            raise FrameError(ErrorCode.INVALID_FRAME, "timeout must be a number", rid)
        if timeout < 0 or timeout > max_timeout or timeout != timeout:
            raise FrameError(ErrorCode.INVALID_FRAME, f"timeout must be in (0, {max_timeout}]", rid)
    return RequestFrame(rid, ftype, data, priority, float(timeout))


def error_frame(code: ErrorCode, message: str, request_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "request_id": request_id,
            "status": "error",
            "code": code.value,
            "error": message,
            "processed_at": time.time(),
        }
    )


def accepted_frame(request_id: str) -> bytes:
    """`{"request_id": ..., "status": "accepted"}`, from a template (the same bytes)."""
    return b'{"request_id":' + orjson.dumps(request_id) + b',"status":"accepted"}'


def text_frames(*payloads: bytes) -> bytearray:
    """Unmasked WebSocket text frames (a server's) of `payloads`, as one buffer: for
    frames of one connection that go out in one write."""
    out = bytearray()
    for payload in payloads:
        n = len(payload)
        if n < 126:
            out += bytes((0x81, n))
        elif n < 65536:
            out += bytes((0x81, 126)) + n.to_bytes(2, "big")
        else:
            out += bytes((0x81, 127)) + n.to_bytes(8, "big")
        out += payload
    return out


def final_frame(
    request_id: str, status: str, data: Any, error: str | None, processed_at: float
) -> bytes:
    out: dict[str, Any] = {"request_id": request_id, "status": status, "processed_at": processed_at}
    if status == "success":
        out["data"] = data
    else:
        out["error"] = error
    try:
        return orjson.dumps(out)
    except TypeError as exc:
        return orjson.dumps(
            {
                "request_id": request_id,
                "status": "error",
                "error": f"result is not JSON: {exc}",
                "processed_at": processed_at,
            }
        )


def welcome_frame(session_id: str, resumed: int) -> bytes:
    return orjson.dumps({"type": "welcome", "session_id": session_id, "resumed": resumed})


def reconnect_frame(reason: str, retry_after: float) -> bytes:
    return orjson.dumps({"type": "reconnect", "reason": reason, "retry_after": retry_after})


__all__ = [
    "CloseCode",
    "ErrorCode",
    "FrameError",
    "RequestFrame",
    "accepted_frame",
    "error_frame",
    "final_frame",
    "parse_request",
    "reconnect_frame",
    "text_frames",
    "welcome_frame",
]
