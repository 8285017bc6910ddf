"""The spliced wire form of `publish_batch` is byte for byte `encode_pubsub`'s, and a batch
that mixes spliced and general messages arrives whole and in order."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import async_wait_until
from meetq import MalformedMessageError, MessageTooLargeError, PubSubMessage, RedisPubSubQueue
from meetq.broadcast.message import BroadcastCodec

PAYLOADS: list[Any] = [
    {},
    {"n": 1, "f": 0.1, "none": None, "list": [1, "two", {"three": 3.0}]},
    {"text": 'quotes " and \\ backslashes, ünïcödé, emoji 🎥, \n newlines'},
    {"big": 2**62, "neg": -5, "nested": {"a": {"b": {"c": []}}}},
]


@pytest.mark.parametrize("source", ["", "media-service", 'odd "source"'])
def test_splicer_bytes_equal_encode_pubsub(source: str) -> None:
    codec = BroadcastCodec()
    splice = codec.splicer("0123456789abcdef", source, 1700000000.123456)
    assert splice is not None
    for seq, payload in enumerate(PAYLOADS, start=1):
        for mtype in ("user_joined", "ü.type", 'a "quoted" type'):
            msg = PubSubMessage(mtype, payload, source=source, timestamp=1700000000.123456)
            expected = codec.encode_pubsub(msg, "0123456789abcdef", seq)
            assert splice.encode(mtype, payload, seq) == expected


def test_splicer_refuses_like_encode_pubsub() -> None:
    codec = BroadcastCodec(max_size=200)
    splice = codec.splicer("p", "", 1.0)
    assert splice is not None
    with pytest.raises(MalformedMessageError):
        splice.encode("t", {"x": object()}, 1)
    with pytest.raises(MalformedMessageError):
        splice.encode("t", {1: "non-string key"}, 1)
    with pytest.raises(MessageTooLargeError):
        splice.encode("t", {"x": "y" * 300}, 1)


def test_no_splicer_for_msgpack() -> None:
    pytest.importorskip("msgpack")
    assert BroadcastCodec("msgpack").splicer("p", "", 1.0) is None


async def test_mixed_batch_arrives_whole_and_in_order(redis_url: str) -> None:
    """Messages with their own id, timestamp or source take the general encoder, the rest
    are spliced; the subscriber sees each one's own fields and one unbroken sequence."""
    ps = RedisPubSubQueue(redis_url, source="svc")
    got: list[PubSubMessage] = []
    gaps: list[Any] = []
    ps.subscribe("mixed", got.append)
    ps.on("meetq.pubsub.gap", gaps.append)
    batch = [
        PubSubMessage("plain", {"n": 0}),
        PubSubMessage("with_id", {"n": 1}, id="my-id"),
        PubSubMessage("with_ts", {"n": 2}, timestamp=123.5),
        PubSubMessage("with_source", {"n": 3}, source="other"),
        PubSubMessage("same_source", {"n": 4}, source="svc"),
        PubSubMessage("plain", {"n": 5}),
    ]
    async with ps:
        assert await ps.publish_batch("mixed", batch) == [1] * len(batch)
        await async_wait_until(lambda: len(got) == len(batch))
    assert [m.payload["n"] for m in got] == list(range(len(batch)))
    assert [m.seq for m in got] == list(range(1, len(batch) + 1))
    assert [m.source for m in got] == ["svc", "svc", "svc", "other", "svc", "svc"]
    assert got[1].id == "my-id" and got[0].id == f"{got[0].publisher}:1"
    assert got[2].timestamp == 123.5
    assert got[0].timestamp == got[5].timestamp == batch[0].timestamp > 0
    assert [(m.publisher, m.seq) for m in batch] == [(m.publisher, m.seq) for m in got]
    assert gaps == []


async def test_refused_message_in_a_batch_leaves_no_hole(redis_url: str) -> None:
    ps = RedisPubSubQueue(redis_url)
    got: list[int] = []
    ps.subscribe("c", lambda m: got.append(m.seq))
    async with ps:
        with pytest.raises(MalformedMessageError):
            await ps.publish_batch(
                "c", [PubSubMessage("t", {"n": 1}), PubSubMessage("t", {"x": object()})]
            )
        await ps.publish_batch("c", [PubSubMessage("t", {"n": 2})])
        await async_wait_until(lambda: got == [1])
    assert ps.get_stats()["gaps"] == 0
