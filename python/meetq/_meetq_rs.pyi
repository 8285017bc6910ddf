"""Type stub of the Rust extension (rust/src/py_*.rs); pure twins in `_ring.py`, `_wheel.py`."""

from collections.abc import Callable
from typing import Any

class LocalEvent:
    type: str
    payload: Any
    source: Any
    timestamp: float
    priority: int
    def __init__(
        self,
        type: str,
        payload: Any = None,
        source: Any = None,
        timestamp: float | None = None,
        priority: int = 1,
    ) -> None: ...

class RingBuffer:
    capacity: int
    limit: int
    lanes: int
    accepted: int
    dropped: int
    def __init__(self, limit: int, lanes: int = 1) -> None: ...
    def try_push(self, item: Any, lane: int = 0) -> bool: ...
    def emit(self, event_type: str, payload: Any = None, source: Any = None) -> bool: ...
    def emit_with_priority(
        self, priority: int, event_type: str, payload: Any = None, source: Any = None
    ) -> bool: ...
    def pop(self) -> Any: ...
    def drain(self, max: int) -> list[Any]: ...
    def arm(self) -> bool: ...
    def disarm(self) -> None: ...
    def set_waker(self, waker: Callable[[], Any] | None) -> None: ...
    def __len__(self) -> int: ...

Task: Any  # typed by its pure twin, meetq._pure.task.Task
SchedulerCore: Any  # typed by its pure twin, meetq._pure.sched.SchedulerCore

def register_task_enums(normal: Any, statuses: tuple[Any, ...]) -> None: ...
