"""The durable queue between services: `RedisMessageQueue` and its parts."""

from meetq.queue.message import Message
from meetq.queue.redis_queue import DeadLetter, RedisMessageQueue

__all__ = ["DeadLetter", "Message", "RedisMessageQueue"]
