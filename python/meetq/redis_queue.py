"""Deprecated import path (one release): use `meetq.RedisMessageQueue` or `meetq.queue`."""

from meetq.queue import DeadLetter, RedisMessageQueue

__all__ = ["DeadLetter", "RedisMessageQueue"]
