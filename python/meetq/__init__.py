"""meetq: the messaging layer of a real-time video-conferencing platform."""

from __future__ import annotations

from meetq import events
from meetq._native import LocalEvent, backend
from meetq.errors import (
    InvalidSessionError,
    MalformedMessageError,
    MeetqConnectionError,
    MeetqError,
    MessageTooLargeError,
    NoRouteError,
    QueueFullError,
    TaskNotFoundError,
)
from meetq.local_bus import LocalEventBus, PriorityLocalEventBus
from meetq.message import Message
from meetq.priority import Priority
from meetq.redis_queue import RedisMessageQueue
from meetq.scheduler import Task, TaskResult, TaskScheduler, TaskStatus

__version__ = "0.1.0"

__all__ = [
    "InvalidSessionError",
    "LocalEvent",
    "LocalEventBus",
    "MalformedMessageError",
    "MeetqConnectionError",
    "MeetqError",
    "Message",
    "MessageTooLargeError",
    "NoRouteError",
    "Priority",
    "PriorityLocalEventBus",
    "QueueFullError",
    "RedisMessageQueue",
    "Task",
    "TaskNotFoundError",
    "TaskResult",
    "TaskScheduler",
    "TaskStatus",
    "backend",
    "events",
]
