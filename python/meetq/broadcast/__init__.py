"""Events across services: Pub/Sub broadcast (at-most-once, never silent) and the durable
Streams event bus (at-least-once, one consumer group per service)."""

from meetq.broadcast.message import DeadEvent, PubSubMessage, StreamEvent
from meetq.broadcast.pubsub import RedisPubSubQueue
from meetq.broadcast.streams import RedisStreamEventBus

__all__ = ["DeadEvent", "PubSubMessage", "RedisPubSubQueue", "RedisStreamEventBus", "StreamEvent"]
