"""The dispatcher's stored body is the queue's Message, byte for byte what
`Message.to_dict()` gives (encode_task builds the fields without making a Message)."""

from __future__ import annotations

import orjson

from meetq import Message, Priority, TaskRequest, TaskType
from meetq._redis.keys import QueueKeys
from meetq.dispatch.outbox import PRIORITY_DIGITS, encode_task
from meetq.queue.message import Codec


def test_the_stored_body_is_the_message_the_queue_reads() -> None:
    req = TaskRequest(TaskType.SPEECH_RECOGNITION, {"a": [1, "x"]}, Priority.HIGH, 1, 2, "s", 30.0)
    req.id, req.created_at, req.max_retries = "abc.2030@ai_tasks", 1000.5, 2
    reply_to = QueueKeys("ai_tasks").reply("d1")
    body = encode_task(req, reply_to, "d1", Codec("json"), 2030250)
    expected = Message(
        type="speech_recognition",
        payload=req.to_dict(),
        priority=Priority.HIGH,
        id=req.id,
        timestamp=1000.5,
        max_retries=2,
        timeout=30.0,
        source="d1",
        reply_to=reply_to,
        expires_at=2030.25,
    )
    assert body[:1] == PRIORITY_DIGITS[int(Priority.HIGH)]
    assert body[1:] == orjson.dumps(expected.to_dict())
    assert Message.from_dict(orjson.loads(body[1:])) == expected
