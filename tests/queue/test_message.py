"""`Message` and `Codec`: round trips, validation, size limit."""

from __future__ import annotations

import orjson
import pytest

from meetq import MalformedMessageError, Message, MessageTooLargeError, Priority
from meetq.queue.message import Codec


def test_round_trip_keeps_every_field() -> None:
    msg = Message(
        type="speech_recognition",
        payload={"a": [1, 2], "b": "x"},
        priority=Priority.HIGH,
        max_retries=3,
        timeout=5.0,
        source="svc",
        destination="ai",
        deliver_at=123.5,
        reply_to="replies:1",
    ).stamp()
    codec = Codec()
    back = codec.decode(codec.encode(msg))
    assert back == msg
    assert back.priority is Priority.HIGH


def test_stamp_fills_id_and_timestamp_once() -> None:
    msg = Message(type="t").stamp()
    first = (msg.id, msg.timestamp)
    assert msg.id and msg.timestamp > 0
    assert (msg.stamp().id, msg.timestamp) == first


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1,2]",
        b'{"payload": {}}',
        b'{"type": ""}',
        b'{"type": "t", "payload": 3}',
        b'{"type": "t", "priority": 9}',
        b'{"type": "t", "timeout": "soon"}',
    ],
)
def test_malformed_bytes_raise_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        Codec().decode(raw)


def test_size_limit_applies_both_ways() -> None:
    codec = Codec(max_size=200)
    with pytest.raises(MessageTooLargeError):
        codec.encode(Message(type="t", payload={"x": "y" * 500}))
    with pytest.raises(MessageTooLargeError):
        codec.decode(orjson.dumps({"type": "t", "payload": {"x": "y" * 500}}))


def test_unserializable_payload_is_malformed() -> None:
    with pytest.raises(MalformedMessageError):
        Codec().encode(Message(type="t", payload={"x": object()}))


def test_msgpack_round_trip() -> None:
    pytest.importorskip("msgpack")
    codec = Codec("msgpack")
    msg = Message(type="t", payload={"k": b"bytes ok"}).stamp()
    assert codec.decode(codec.encode(msg)) == msg


def test_ids_are_unique_and_a_forked_child_gets_its_own_prefix() -> None:
    import os

    from meetq.queue.message import new_id

    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports one id and leaves at once
        os.write(w, new_id().encode())
        os._exit(0)
    os.close(w)
    child_id = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child_id and child_id[:24] != new_id()[:24]
