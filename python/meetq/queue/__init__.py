"""The durable queue between services: `RedisMessageQueue` and the parts it composes
(`Publisher`, `QueueAdmin`, `QueueConfig`, ...), each usable on its own."""

from meetq.queue.admin import DeadLetter, QueueAdmin
from meetq.queue.config import QueueConfig
from meetq.queue.message import Message
from meetq.queue.message_queue import RedisMessageQueue
from meetq.queue.publisher import Publisher

__all__ = ["DeadLetter", "Message", "Publisher", "QueueAdmin", "QueueConfig", "RedisMessageQueue"]
