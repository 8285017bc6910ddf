"""The dispatcher's vocabulary: task types, requests, responses and service routes.

`TaskType` is a `str` enum of the seed's types, but any string is a valid type once a
route names it. `TaskStatus` is the scheduler's enum (one life cycle everywhere).
A request travels to the worker as the payload of a queue `Message` (`to_dict`), and the
worker rebuilds it with the validating `TaskRequest.from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from meetq.errors import MalformedMessageError
from meetq.local.scheduler import TaskStatus
from meetq.priority import Priority

FINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED}
)
"""A task in one of these never changes status again."""


class TaskType(StrEnum):
    SPEECH_RECOGNITION = "speech_recognition"
    EMOTION_DETECTION = "emotion_detection"
    SYNTHESIS_DETECTION = "synthesis_detection"
    AUDIO_DENOISING = "audio_denoising"
    VIDEO_ENHANCEMENT = "video_enhancement"
    TEXT_TO_SPEECH = "text_to_speech"
    MEDIA_PROCESSING = "media_processing"
    STREAM_CONTROL = "stream_control"
    RECORDING = "recording"
    MEETING_CONTROL = "meeting_control"
    USER_MANAGEMENT = "user_management"
    SIGNALING = "signaling"
    WEBRTC_NEGOTIATION = "webrtc_negotiation"


_PRIORITIES = tuple(Priority)


def _priority(value: Any) -> Priority:
    if type(value) is int and 0 <= value <= 3:
        return _PRIORITIES[value]
    return Priority(int(value))


@dataclass(slots=True)
class TaskRequest:
    """One task for a service. `id` is set by the dispatcher (it names the task's queue);
    `timeout` (seconds) bounds the whole task, queue wait included: past it the task ends
    TIMEOUT and a worker that has not started it never will."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    user_id: int = 0
    meeting_id: int = 0
    session_id: str = ""
    timeout: float = 30.0
    max_retries: int = 0
    id: str = ""
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": str(self.type),
            "payload": self.payload,
            "priority": int(self.priority),
            "user_id": self.user_id,
            "meeting_id": self.meeting_id,
            "session_id": self.session_id,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TaskRequest:
        """Validating constructor from decoded JSON; bad shapes raise MalformedMessageError."""
        if not isinstance(data, dict):
            raise MalformedMessageError(f"task request must be an object, not {type(data)}")
        try:
            ttype = data["type"]
            payload = data.get("payload") or {}
            if not isinstance(ttype, str) or not ttype:
                raise MalformedMessageError("task type must be a non-empty string")
            if not isinstance(payload, dict):
                raise MalformedMessageError("task payload must be an object")
            return cls(
                type=ttype,
                payload=payload,
                priority=_priority(data.get("priority", 1)),
                user_id=int(data.get("user_id", 0)),
                meeting_id=int(data.get("meeting_id", 0)),
                session_id=str(data.get("session_id", "")),
                timeout=float(data.get("timeout", 30.0)),
                max_retries=int(data.get("max_retries", 0)),
                id=str(data.get("id", "")),
                created_at=float(data.get("created_at", 0.0)),
            )
        except MalformedMessageError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessageError(f"bad task request field: {exc!r}") from exc


@dataclass(slots=True)
class TaskResponse:
    """Where a task stands: PENDING right after dispatch, then exactly one final status."""

    task_id: str
    status: TaskStatus
    result: dict[str, Any] | None = None
    error: str | None = None
    processed_at: float = 0.0
    duration: float = 0.0

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(slots=True)
class ServiceRoute:
    """Task types that one service consumes from one queue."""

    service_name: str
    queue_name: str
    task_types: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.queue_name or "{" in self.queue_name or "}" in self.queue_name:
            raise ValueError("queue_name must be non-empty and free of braces")
        if "@" in self.queue_name:
            raise ValueError("queue_name must not contain '@' (task ids end in @<queue>)")
        self.task_types = [str(t) for t in self.task_types]


def default_routes() -> list[ServiceRoute]:
    """The seed's routes: four services, each with its queue."""
    t = TaskType
    return [
        ServiceRoute(
            "ai-service",
            "ai_tasks",
            [
                t.SPEECH_RECOGNITION,
                t.EMOTION_DETECTION,
                t.SYNTHESIS_DETECTION,
                t.AUDIO_DENOISING,
                t.VIDEO_ENHANCEMENT,
                t.TEXT_TO_SPEECH,
            ],
        ),
        ServiceRoute(
            "media-service", "media_tasks", [t.MEDIA_PROCESSING, t.STREAM_CONTROL, t.RECORDING]
        ),
        ServiceRoute("meeting-service", "meeting_tasks", [t.MEETING_CONTROL, t.USER_MANAGEMENT]),
        ServiceRoute("signaling-service", "signaling_tasks", [t.SIGNALING, t.WEBRTC_NEGOTIATION]),
    ]


def make_task_id(unique: str, deadline_ms: int, queue: str) -> str:
    """A dispatcher's task id, `<unique>.<deadline second>@<queue>`: any process can tell
    from it where the task's status lives (the queue's `done:<second>` hash)."""
    return f"{unique}.{deadline_ms // 1000}@{queue}"


def queue_of(task_id: str) -> str | None:
    """The queue a dispatcher-made task id names, or None."""
    _, sep, queue = task_id.partition("@")
    return queue if sep and queue else None


def deadline_second_of(task_id: str) -> int | None:
    """The deadline second a dispatcher-made task id names, or None."""
    head, sep, _ = task_id.partition("@")
    _, dot, second = head.rpartition(".")
    return int(second) if sep and dot and second.isdigit() else None


__all__ = [
    "FINAL_STATUSES",
    "ServiceRoute",
    "TaskRequest",
    "TaskResponse",
    "TaskStatus",
    "TaskType",
    "deadline_second_of",
    "default_routes",
    "make_task_id",
    "queue_of",
]
