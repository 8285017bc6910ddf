"""meetq: the messaging layer of a real-time video-conferencing platform.

`import meetq` loads only the core (Redis queue, local bus, scheduler); the optional parts
are imported on first use of their names (PEP 562) and need their extras installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from meetq import events
from meetq._native import LocalEvent, backend
from meetq._version import __version__
from meetq.broadcast import (
    DeadEvent,
    PubSubMessage,
    RedisPubSubQueue,
    RedisStreamEventBus,
    StreamEvent,
)
from meetq.dispatch import (
    ServiceRoute,
    ServiceWorker,
    TaskDispatcher,
    TaskRequest,
    TaskResponse,
    TaskType,
)
from meetq.errors import (
    DispatcherStoppedError,
    InvalidArgumentError,
    InvalidSessionError,
    MalformedMessageError,
    MeetqConnectionError,
    MeetqError,
    MessageTooLargeError,
    NoRouteError,
    QueueFullError,
    RedisCommandError,
    TaskNotFoundError,
)
from meetq.local import (
    LocalEventBus,
    PriorityLocalEventBus,
    Task,
    TaskResult,
    TaskScheduler,
    TaskStatus,
)
from meetq.manager import QueueManager
from meetq.priority import Priority
from meetq.queue import DeadLetter, Message, RedisMessageQueue

_LAZY: dict[str, str] = {
    "ClientTaskManager": "meetq.gateway.sessions",
    "ClientTaskRequest": "meetq.gateway.sessions",
    "ClientTaskResponse": "meetq.gateway.sessions",
    "GatewayServer": "meetq.gateway.server",
    # meetq[ai]: the StackFlow client, node and AI service (pyzmq).
    "StackFlowClient": "meetq.ai",
    "StackFlowNode": "meetq.ai",
    "StackFlowError": "meetq.ai",
    "AIService": "meetq.ai",
}
"""Public name -> the module that defines it, imported when the name is first used."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meetq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "DeadEvent",
    "DeadLetter",
    "DispatcherStoppedError",
    "InvalidArgumentError",
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
    "PubSubMessage",
    "QueueFullError",
    "QueueManager",
    "RedisCommandError",
    "RedisMessageQueue",
    "RedisPubSubQueue",
    "RedisStreamEventBus",
    "ServiceRoute",
    "ServiceWorker",
    "StreamEvent",
    "Task",
    "TaskDispatcher",
    "TaskNotFoundError",
    "TaskRequest",
    "TaskResponse",
    "TaskResult",
    "TaskScheduler",
    "TaskStatus",
    "TaskType",
    "__version__",
    "backend",
    "events",
]
