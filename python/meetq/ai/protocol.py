"""The StackFlow wire format (Edge-LLM-Infra), sans I/O: bytes in, values out, no sockets.

Everything here follows ../shared/AI_NODE_PROTOCOL.md byte for byte, so the client can
drive the C++ nodes unchanged and our node looks identical to a client:

- node RPC is REQ/REP with two frames `[action, payload]`; two-field payloads are
  length-prefixed (`lp`): one byte `len(a)` (at most 127), `a`, then `b` as the rest;
- requests are compact JSON in raw UTF-8 (the C++ nodes do not decode `\\uXXXX` escapes),
  with `zmq_com` (the reply URL) as the first key of a published inference request;
- node replies are compact JSON with sorted keys and a trailing newline, one per frame,
  `error` always present (`{"code":0,"message":""}` on success).

The socket layers (`client.py`, `node.py`) only move these bytes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from meetq.ai.errors import ProtocolError

# Actions of the manager's rpc.sys (node -> manager).
REGISTER_UNIT = "register_unit"
RELEASE_UNIT = "release_unit"
SQL_SELECT = "sql_select"
SQL_SET = "sql_set"
SQL_UNSET = "sql_unset"
LIST_ACTION = "list_action"
SYS_ACTIONS = (REGISTER_UNIT, RELEASE_UNIT, SQL_SELECT, SQL_SET, SQL_UNSET, LIST_ACTION)

# Actions of a node's rpc.<unit> (manager -> node), and the one carried on inference_url.
SETUP = "setup"
EXIT = "exit"
PAUSE = "pause"
TASKINFO = "taskinfo"
INFERENCE = "inference"
NODE_ACTIONS = (SETUP, EXIT, PAUSE, TASKINFO, LIST_ACTION)

# Fixed RPC answers.
ACK = b"None"
NOT_ACTION = b"NotAction"
SUCCESS = b"Success"
FALSE = b"False"

# Error codes of the framework.
OK = 0
JSON_FORMAT_ERROR = -2
INFERENCE_PUSH_FAILED = -4
MODEL_LOAD_FAILED = -5
UNIT_NOT_FOUND = -6
UNIT_CALL_FAILED = -9
TASK_RUN_FAILED = -11
NO_SUCH_ACTION = -18
TASK_FULL = -21
INFERENCE_DATA_EMPTY = -24
STREAM_INDEX_ERROR = -25

ERROR_MESSAGES: dict[int, str] = {
    JSON_FORMAT_ERROR: "json format error",
    INFERENCE_PUSH_FAILED: "inference data push false",
    MODEL_LOAD_FAILED: "model load failed",
    UNIT_NOT_FOUND: "unit does not exist",
    UNIT_CALL_FAILED: "unit call false",
    TASK_RUN_FAILED: "task run failed",
    NO_SUCH_ACTION: "unit has no such action",
    TASK_FULL: "task full",
    INFERENCE_DATA_EMPTY: "inference data empty",
    STREAM_INDEX_ERROR: "stream index error",
}

# Port pool of work_id URLs: each work_id takes p (output) and p + 1 (inference).
PORT_FIRST = 5010
PORT_LAST = 5554

MAX_PREFIX = 127


def lp(a: bytes, b: bytes) -> bytes:
    """`set_param(a, b)`: one length byte, `a`, then `b` as the rest of the frame."""
    if len(a) > MAX_PREFIX:
        raise ProtocolError(f"length-prefixed field is {len(a)} bytes, at most {MAX_PREFIX}")
    return bytes((len(a),)) + a + b


def unlp(frame: bytes) -> tuple[bytes, bytes]:
    """The inverse of `lp`; a frame whose length byte overruns it is a ProtocolError."""
    if not frame:
        raise ProtocolError("empty length-prefixed frame")
    n = frame[0]
    if n > MAX_PREFIX or n + 1 > len(frame):
        raise ProtocolError(f"length byte {n} does not fit a {len(frame)}-byte frame")
    return frame[1 : 1 + n], frame[1 + n :]


def dumps(value: Any) -> bytes:
    """Compact JSON in raw UTF-8, keys in the caller's order (requests)."""
    return orjson.dumps(value)


def dumps_sorted(value: Any) -> bytes:
    """Compact JSON with sorted keys and the trailing newline the nodes send (replies)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"json format error: {exc}") from None


def is_stream(obj: str | None) -> bool:
    """Stream objects (`llm.utf-8.stream`) carry `{delta, index, finish}` chunks."""
    return obj is not None and "stream" in obj


# --- manager -> node ---------------------------------------------------------------


def setup_request(
    request_id: str,
    unit: str,
    model: str,
    *,
    response_format: str,
    input: str,
    enoutput: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The setup envelope; its work_id is the bare unit name (the node picks N)."""
    data: dict[str, Any] = {
        "model": model,
        "response_format": response_format,
        "input": input,
        "enoutput": enoutput,
    }
    if extra:
        data.update(extra)
    return {
        "request_id": request_id,
        "work_id": unit,
        "action": SETUP,
        "object": f"{unit}.setup",
        "data": data,
    }


def control_request(request_id: str, work_id: str, action: str) -> dict[str, Any]:
    """exit / taskinfo / pause: no object, no data."""
    return {"request_id": request_id, "work_id": work_id, "action": action}


def rpc_call(action: str, reply_url: str, request: Mapping[str, Any]) -> list[bytes]:
    """The two frames of a node RPC: `[action, lp(reply_url) + raw_json]`."""
    return [action.encode(), lp(reply_url.encode(), dumps(request))]


def inference_frame(reply_url: str, request_id: str, work_id: str, obj: str, data: Any) -> bytes:
    """One inference request as published on inference_url, `zmq_com` first."""
    return dumps(
        {
            "zmq_com": reply_url,
            "request_id": request_id,
            "work_id": work_id,
            "action": INFERENCE,
            "object": obj,
            "data": data,
        }
    )


def inference_parts(reply_url: str, work_id: str, obj: str) -> tuple[bytes, bytes]:
    """`inference_frame` split around the request_id, for building frames by concatenation:
    `head + request_id + mid + dumps(data) + b"}"` (request_ids must need no escaping)."""
    head = b'{"zmq_com":' + dumps(reply_url) + b',"request_id":"'
    mid = b'","work_id":' + dumps(work_id) + b',"action":"inference","object":' + dumps(obj)
    return head, mid + b',"data":'


def chunk(delta: str, index: int, finish: bool) -> dict[str, Any]:
    return {"delta": delta, "index": index, "finish": finish}


# --- node -> manager ---------------------------------------------------------------


@dataclass(slots=True)
class Reply:
    """One decoded reply frame from a node."""

    request_id: str
    work_id: str
    object: str
    data: Any
    code: int
    message: str
    created: int

    @property
    def ok(self) -> bool:
        return self.code == OK

    @property
    def is_chunk(self) -> bool:
        return isinstance(self.data, dict) and "finish" in self.data


def reply_frame(
    request_id: str,
    work_id: str,
    data: Any = "None",
    *,
    obj: str = "None",
    code: int = OK,
    message: str = "",
    created: int | None = None,
) -> bytes:
    """A node's reply exactly as the C++ nodes send it."""
    return dumps_sorted(
        {
            "created": int(time.time()) if created is None else created,
            "data": data,
            "error": {"code": code, "message": message},
            "object": obj,
            "request_id": request_id,
            "work_id": work_id,
        }
    )


class ReplyEncoder:
    """`reply_frame` for one (work_id, object) by concatenation: the sorted layout
    `created, data, error, object, request_id, work_id` with the constant parts built once
    (a node sends two frames per streamed answer; this is its hot path). The `created`
    prefix is rebuilt once per second, not per frame."""

    __slots__ = ("_created", "_end", "_second", "_tail")

    def __init__(self, work_id: str, obj: str) -> None:
        self._tail = b',"error":{"code":0,"message":""},"object":' + dumps(obj) + b',"request_id":'
        self._end = b',"work_id":' + dumps(work_id) + b"}\n"
        self._second = -1
        self._created = b""

    def _head(self) -> bytes:
        """`{"created":<now>,"data":` for the current second."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._created = b'{"created":' + str(now).encode() + b',"data":'
        return self._created

    def ok(self, request_id: str, data: Any, created: int | None = None) -> bytes:
        head = self._head() if created is None else b'{"created":%d,"data":' % created
        return head + dumps_sorted_compact(data) + self._tail + dumps(request_id) + self._end

    def chunk(self, request_id: str, delta: str, index: int, finish: bool) -> bytes:
        return self.chunk_json(dumps(request_id), delta, index, finish)

    def chunk_json(self, request_id_json: bytes, delta: str, index: int, finish: bool) -> bytes:
        """`chunk` with the request_id already JSON-encoded (once per request, not frame)."""
        return (
            self._head()
            + b'{"delta":'
            + dumps(delta)
            + (b',"finish":true,"index":' if finish else b',"finish":false,"index":')
            + str(index).encode()
            + b"}"
            + self._tail
            + request_id_json
            + self._end
        )


def dumps_sorted_compact(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def error_frame(request_id: str, work_id: str, code: int, message: str = "") -> bytes:
    """An error reply; the message defaults to the framework's text for the code."""
    return reply_frame(
        request_id, work_id, obj="None", code=code, message=message or ERROR_MESSAGES[code]
    )


def parse_reply(frame: bytes) -> Reply:
    """Decodes one reply frame; anything that is not a reply object is a ProtocolError."""
    obj = loads(frame)
    if not isinstance(obj, dict):
        raise ProtocolError("reply is not a JSON object")
    error = obj.get("error")
    if isinstance(error, dict):
        code = error.get("code", OK)
        message = error.get("message", "")
    else:
        code, message = OK, ""
    if not isinstance(code, int):
        raise ProtocolError(f"reply error code is not an integer: {code!r}")
    request_id = obj.get("request_id")
    if not isinstance(request_id, str):
        raise ProtocolError("reply has no request_id")
    created = obj.get("created", 0)
    return Reply(
        request_id=request_id,
        work_id=str(obj.get("work_id", "")),
        object=str(obj.get("object", "None")),
        data=obj.get("data"),
        code=code,
        message=str(message),
        created=created if isinstance(created, int) else 0,
    )


# --- rpc.sys payloads --------------------------------------------------------------


def register_reply(n: int, output_url: str, inference_url: str) -> bytes:
    """`set_param(str(N), set_param(output_url, inference_url))`."""
    return lp(str(n).encode(), lp(output_url.encode(), inference_url.encode()))


def parse_register_reply(frame: bytes) -> tuple[int, str, str]:
    n, urls = unlp(frame)
    out, inf = unlp(urls)
    try:
        return int(n), out.decode(), inf.decode()
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"malformed register_unit reply {frame!r}") from None


def list_action_reply(actions: tuple[str, ...]) -> bytes:
    return dumps({"actions": list(actions)})
