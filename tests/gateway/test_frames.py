"""Frames, sans I/O: every rule checked on bytes, plus a property that nothing but a
FrameError ever comes out of parse_request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meetq import Priority
from meetq.gateway.frames import (
    ErrorCode,
    FrameError,
    accepted_frame,
    error_frame,
    final_frame,
    parse_request,
)


def test_a_full_request() -> None:
    frame = parse_request(
        b'{"request_id": "r1", "type": "ai.speech_recognition", "data": {"a": 1},'
        b' "priority": "HIGH", "timeout": 12.5}',
        1024,
    )
    assert frame.request_id == "r1"
    assert frame.type == "ai.speech_recognition"
    assert frame.data == {"a": 1}
    assert frame.priority is Priority.HIGH
    assert frame.timeout == 12.5


def test_defaults() -> None:
    frame = parse_request('{"request_id": "r", "type": "chat.x", "data": null}', 1024)
    assert frame.data == {} and frame.priority is Priority.NORMAL and frame.timeout == 0.0


@pytest.mark.parametrize(
    ("raw", "code", "rid"),
    [
        (b"", ErrorCode.INVALID_JSON, None),
        (b"\xff\xfe", ErrorCode.INVALID_JSON, None),
        (b"null", ErrorCode.INVALID_FRAME, None),
        (b'"str"', ErrorCode.INVALID_FRAME, None),
        (b'{"request_id": 5, "type": "x"}', ErrorCode.INVALID_FRAME, None),
        (b'{"request_id": "", "type": "x"}', ErrorCode.INVALID_FRAME, None),
        (b'{"request_id": "' + b"a" * 129 + b'", "type": "x"}', ErrorCode.INVALID_FRAME, None),
        (b'{"request_id": "a\\nb", "type": "x"}', ErrorCode.INVALID_FRAME, None),
        (b'{"request_id": "r", "type": 3}', ErrorCode.INVALID_FRAME, "r"),
        (b'{"request_id": "r", "type": "x", "data": []}', ErrorCode.INVALID_FRAME, "r"),
        (b'{"request_id": "r", "type": "x", "priority": true}', ErrorCode.INVALID_FRAME, "r"),
        (b'{"request_id": "r", "type": "x", "priority": 9}', ErrorCode.INVALID_FRAME, "r"),
        (b'{"request_id": "r", "type": "x", "timeout": 1e9}', ErrorCode.INVALID_FRAME, "r"),
        (b'{"request_id": "r", "type": "x", "timeout": true}', ErrorCode.INVALID_FRAME, "r"),
    ],
)
def test_bad_frames(raw: bytes, code: ErrorCode, rid: str | None) -> None:
    with pytest.raises(FrameError) as info:
        parse_request(raw, 1024)
    assert info.value.code is code
    assert info.value.request_id == rid


def test_size_limit_comes_first() -> None:
    with pytest.raises(FrameError) as info:
        parse_request(b"{" + b" " * 2000 + b"}", 1024)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_out_frames() -> None:
    assert orjson.loads(accepted_frame("r")) == {"request_id": "r", "status": "accepted"}
    ok = orjson.loads(final_frame("r", "success", {"x": 1}, None, 5.0))
    assert ok == {"request_id": "r", "status": "success", "data": {"x": 1}, "processed_at": 5.0}
    bad = orjson.loads(final_frame("r", "timeout", None, "timed out", 5.0))
    assert bad["error"] == "timed out" and "data" not in bad
    err = orjson.loads(error_frame(ErrorCode.UNKNOWN_TYPE, "nope", "r"))
    assert err["code"] == "unknown_type" and err["status"] == "error"
    weird = orjson.loads(final_frame("r", "success", {"x": object()}, None, 1.0))
    assert weird["status"] == "error" and "not JSON" in weird["error"]


json_values: Any = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
frames = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(
        st.sampled_from(["request_id", "type", "data", "priority", "timeout", "x"]),
        json_values,
        max_size=6,
    ).map(orjson.dumps),
)


@settings(max_examples=400, deadline=None)
@given(frames)
def test_only_frame_errors_come_out(raw: bytes) -> None:
    try:
        frame = parse_request(raw, 1024)
    except FrameError as exc:
        assert exc.code in set(ErrorCode)
        return
    assert isinstance(frame.request_id, str) and frame.request_id
    assert isinstance(frame.data, dict)
    assert 0 <= frame.timeout <= 300


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"low"', Priority.LOW),
        ('"High"', Priority.HIGH),
        ('"CRITICAL"', Priority.CRITICAL),
        ("0", Priority.LOW),
        ("3", Priority.CRITICAL),
        ('"urgent"', None),
        ("1.0", None),
        ("-1", None),
        ("false", None),
        ("[1]", None),
        ("null", None),
    ],
)
def test_priority_spellings(raw: str, expected: Priority | None) -> None:
    frame = f'{{"request_id": "r", "type": "chat.x", "priority": {raw}}}'
    if expected is None:
        with pytest.raises(FrameError) as info:
            parse_request(frame, 1024)
        assert info.value.code is ErrorCode.INVALID_FRAME and info.value.request_id == "r"
    else:
        assert parse_request(frame, 1024).priority is expected


def reference_parse(raw: bytes, max_size: int, max_timeout: float = 300.0) -> Any:
    """The frame rules written plainly (isinstance checks, Priority.parse): what the fast
    parse_request must agree with, outcome for outcome."""
    if len(raw) > max_size:
        return ErrorCode.FRAME_TOO_LARGE, None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ErrorCode.INVALID_JSON, None
    if not isinstance(obj, dict):
        return ErrorCode.INVALID_FRAME, None
    rid = obj.get("request_id")
    if not isinstance(rid, str) or not 0 < len(rid) <= 128 or not rid.isprintable():
        return ErrorCode.INVALID_FRAME, None
    ftype = obj.get("type")
    if not isinstance(ftype, str) or not ftype:
        return ErrorCode.INVALID_FRAME, rid
    data = obj.get("data", {})
    data = {} if data is None else data
    if not isinstance(data, dict):
        return ErrorCode.INVALID_FRAME, rid
    prio = obj.get("priority", "normal")
    try:
        if isinstance(prio, bool) or not isinstance(prio, str | int):
            raise ValueError(prio)
        priority = Priority.parse(prio)
    except ValueError:
        return ErrorCode.INVALID_FRAME, rid
    timeout = obj.get("timeout", 0)
    timeout = 0 if timeout is None else timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        return ErrorCode.INVALID_FRAME, rid
    if timeout < 0 or timeout > max_timeout:
        return ErrorCode.INVALID_FRAME, rid
    return rid, ftype, data, priority, float(timeout)


field_values: Any = st.one_of(
    json_values,
    st.sampled_from(["low", "Normal", "HIGH", "critical", "urgent", "", "r1", "ai.x"]),
    st.integers(-2, 5),
    st.floats(-1, 400),
)
request_frames = st.dictionaries(
    st.sampled_from(["request_id", "type", "data", "priority", "timeout", "x"]),
    field_values,
    max_size=6,
).map(orjson.dumps)


@settings(max_examples=300, deadline=None)
@given(st.one_of(request_frames, frames))
def test_parse_agrees_with_the_plain_rules(raw: bytes) -> None:
    expected = reference_parse(raw, 1024)
    try:
        frame = parse_request(raw, 1024)
    except FrameError as exc:
        assert (exc.code, exc.request_id) == expected
        return
    got = (frame.request_id, frame.type, frame.data, frame.priority, frame.timeout)
    assert got == expected
    assert type(got[3]) is Priority
