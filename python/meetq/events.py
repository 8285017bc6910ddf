"""Predefined event names shared by the services (from the seed design)."""

from __future__ import annotations

MEETING_CREATED = "meeting.created"
MEETING_STARTED = "meeting.started"
MEETING_ENDED = "meeting.ended"
USER_JOINED = "meeting.user_joined"
USER_LEFT = "meeting.user_left"
STREAM_STARTED = "media.stream_started"
STREAM_STOPPED = "media.stream_stopped"
AI_TASK_CREATED = "ai.task_created"
AI_TASK_COMPLETED = "ai.task_completed"
AI_TASK_FAILED = "ai.task_failed"

ALL = (
    MEETING_CREATED,
    MEETING_STARTED,
    MEETING_ENDED,
    USER_JOINED,
    USER_LEFT,
    STREAM_STARTED,
    STREAM_STOPPED,
    AI_TASK_CREATED,
    AI_TASK_COMPLETED,
    AI_TASK_FAILED,
)

# Local events of meetq's own components (emitted in-process, never published).
PUBSUB_RECONNECTED = "meetq.pubsub.reconnected"
"""A `RedisPubSubQueue` re-subscribed after losing its subscription; payload `away` (s)."""
PUBSUB_GAP = "meetq.pubsub.gap"
"""A subscriber saw a publisher's sequence jump; payload `from`, `to`, `missed`."""

INTERNAL = (PUBSUB_RECONNECTED, PUBSUB_GAP)
