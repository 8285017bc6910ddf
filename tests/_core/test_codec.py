"""`meetq._core.codec.Codec`: plain values both ways, size limit both ways, clear errors."""

from __future__ import annotations

import pytest

from meetq._core.codec import Codec
from meetq.errors import MalformedMessageError, MessageTooLargeError
from meetq.queue import message


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_round_trip(fmt: str) -> None:
    if fmt == "msgpack":
        pytest.importorskip("msgpack")
    codec = Codec(fmt)  # type: ignore[arg-type]
    value = {"a": [1, 2.5, "x"], "b": None, "c": True}
    assert codec.load(codec.dump(value)) == value


def test_limits_and_errors() -> None:
    codec = Codec(max_size=10)
    with pytest.raises(MessageTooLargeError, match="event is 28 bytes, limit 10"):
        codec.dump({"x": "y" * 20}, "event")
    with pytest.raises(MessageTooLargeError):
        codec.load(b'"' + b"y" * 20 + b'"')
    with pytest.raises(MalformedMessageError):
        Codec().dump({"x": object()})
    with pytest.raises(MalformedMessageError):
        Codec().load(b"\xff not json")
    with pytest.raises(ValueError):
        Codec("pickle")  # type: ignore[arg-type]


def test_the_message_codec_is_a_codec() -> None:
    assert issubclass(message.Codec, Codec)
    assert Codec().max_size == message.DEFAULT_MAX_SIZE
