"""Wire format against the byte sequences of AI_NODE_PROTOCOL.md (no sockets)."""

from __future__ import annotations

import pytest

from meetq.ai import protocol as p
from meetq.ai.errors import (
    ProtocolError,
    StackFlowError,
    StreamIndexError,
    UnitNotFoundError,
    error_for,
)


def test_length_prefix_framing() -> None:
    url = b"ipc:///tmp/llm/8000.sock"
    frame = p.lp(url, b'{"a":1}')
    assert frame == bytes([len(url)]) + url + b'{"a":1}'
    assert frame[0] == 24
    assert p.unlp(frame) == (url, b'{"a":1}')
    # The wrong "url\nraw_json" form is not what we send: its first byte is 'i'.
    assert p.rpc_call("setup", url.decode(), {"x": 1})[1][0] == 24


def test_length_prefix_limits() -> None:
    assert p.lp(b"a" * 127, b"")[0] == 127
    with pytest.raises(ProtocolError):
        p.lp(b"a" * 128, b"")
    with pytest.raises(ProtocolError):
        p.unlp(b"")
    with pytest.raises(ProtocolError):
        p.unlp(b"\x10short")  # length overruns the frame
    assert p.unlp(b"\x00rest") == (b"", b"rest")


def test_setup_request_bytes_match_the_document() -> None:
    req = p.setup_request(
        "r1", "llm", "m", response_format="llm.utf-8.stream", input="llm.utf-8.stream"
    )
    assert p.dumps(req) == (
        b'{"request_id":"r1","work_id":"llm","action":"setup","object":"llm.setup",'
        b'"data":{"model":"m","response_format":"llm.utf-8.stream",'
        b'"input":"llm.utf-8.stream","enoutput":true}}'
    )
    frames = p.rpc_call("setup", "ipc:///tmp/llm/8000.sock", req)
    assert frames[0] == b"setup"
    assert frames[1] == b"\x18ipc:///tmp/llm/8000.sock" + p.dumps(req)


def test_inference_request_has_zmq_com_first() -> None:
    frame = p.inference_frame(
        "ipc:///tmp/llm/8000.sock", "r2", "llm.0", "llm.utf-8.stream", p.chunk("hi", 0, True)
    )
    assert frame == (
        b'{"zmq_com":"ipc:///tmp/llm/8000.sock","request_id":"r2","work_id":"llm.0",'
        b'"action":"inference","object":"llm.utf-8.stream",'
        b'"data":{"delta":"hi","index":0,"finish":true}}'
    )


def test_exit_request_bytes() -> None:
    assert p.dumps(p.control_request("r3", "llm.0", "exit")) == (
        b'{"request_id":"r3","work_id":"llm.0","action":"exit"}'
    )


def test_raw_utf8_out_not_escaped() -> None:
    frame = p.inference_frame("u", "r", "llm.0", "llm.utf-8", "grüß 会议")
    assert "grüß 会议".encode() in frame
    assert b"\\u" not in frame


def test_reply_bytes_match_the_document() -> None:
    frame = p.reply_frame("r1", "llm.0", created=1795881769)
    assert frame == (
        b'{"created":1795881769,"data":"None","error":{"code":0,"message":""},'
        b'"object":"None","request_id":"r1","work_id":"llm.0"}\n'
    )


def test_stream_reply_chunk_sorted_with_newline() -> None:
    frame = p.reply_frame("r2", "llm.0", p.chunk("", 3, True), obj="llm.utf-8.stream", created=1)
    assert frame == (
        b'{"created":1,"data":{"delta":"","finish":true,"index":3},'
        b'"error":{"code":0,"message":""},"object":"llm.utf-8.stream",'
        b'"request_id":"r2","work_id":"llm.0"}\n'
    )
    reply = p.parse_reply(frame)
    assert reply.ok and reply.is_chunk and reply.data["finish"] is True


def test_error_reply_round_trip() -> None:
    frame = p.error_frame("r9", "llm.7", p.UNIT_NOT_FOUND)
    assert b'"error":{"code":-6,"message":"unit does not exist"}' in frame
    reply = p.parse_reply(frame)
    assert (reply.code, reply.message, reply.work_id) == (-6, "unit does not exist", "llm.7")
    exc = error_for(reply.code, reply.message)
    assert isinstance(exc, UnitNotFoundError)
    assert (exc.code, exc.message) == (-6, "unit does not exist")


@pytest.mark.parametrize("code", sorted(p.ERROR_MESSAGES))
def test_every_framework_code_has_its_class(code: int) -> None:
    exc = error_for(code, p.ERROR_MESSAGES[code])
    assert exc.code == code and type(exc) is not StackFlowError
    assert isinstance(error_for(-25, "x"), StreamIndexError)
    unknown = error_for(-77, "odd")
    assert type(unknown) is StackFlowError and unknown.code == -77


def test_parse_reply_rejects_non_replies() -> None:
    for bad in (b"{", b"[]", b'{"data":"None"}', b'{"request_id":"r","error":{"code":"x"}}'):
        with pytest.raises(ProtocolError):
            p.parse_reply(bad)


def test_register_reply_is_nested_set_param() -> None:
    out = "ipc:///tmp/llm/5010.sock.llm.output_url"
    inf = "ipc:///tmp/llm/5011.sock.llm.inference_url"
    frame = p.register_reply(0, out, inf)
    assert frame == b"\x010" + bytes([len(out)]) + out.encode() + inf.encode()
    assert p.parse_register_reply(frame) == (0, out, inf)
    with pytest.raises(ProtocolError):
        p.parse_register_reply(b"\x01x\x00")


def test_list_action_reply() -> None:
    assert p.list_action_reply(("setup", "exit")) == b'{"actions":["setup","exit"]}'


def test_inference_parts_build_the_same_bytes() -> None:
    url, rid, wid, obj = "ipc:///tmp/llm/8000.sock", "a1b2c3-17", "llm.0", "llm.utf-8.stream"
    head, mid = p.inference_parts(url, wid, obj)
    data = p.chunk("grüß", 0, True)
    built = head + rid.encode() + mid + p.dumps(data) + b"}"
    assert built == p.inference_frame(url, rid, wid, obj, data)


@pytest.mark.parametrize("obj", ["llm.utf-8.stream", "llm.utf-8"])
def test_reply_encoder_builds_the_same_bytes(obj: str) -> None:
    enc = p.ReplyEncoder("llm.3", obj)
    for delta, index, finish in (('hé\n"x"', 0, False), ("", 4, True)):
        built = enc.chunk("r-1", delta, index, finish)
        fixed = p.reply_frame("r-1", "llm.3", p.chunk(delta, index, finish), obj=obj, created=7)
        # `created` is the clock; everything after it must be identical.
        assert built.split(b",", 1)[1] == fixed.split(b",", 1)[1]
    assert enc.ok("r-2", "text", created=7) == p.reply_frame(
        "r-2", "llm.3", "text", obj=obj, created=7
    )
    assert enc.ok("r-2", {"b": 1, "a": 2}, created=7) == p.reply_frame(
        "r-2", "llm.3", {"b": 1, "a": 2}, obj=obj, created=7
    )
