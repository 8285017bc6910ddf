"""The in-process layer: the event bus and the task scheduler on native cores."""

from meetq.local.bus import LocalEventBus, PriorityLocalEventBus
from meetq.local.scheduler import Task, TaskResult, TaskScheduler, TaskStatus

__all__ = [
    "LocalEventBus",
    "PriorityLocalEventBus",
    "Task",
    "TaskResult",
    "TaskScheduler",
    "TaskStatus",
]
