"""meetq.events holds the seed's predefined event names (EventMeetingCreated ... in the Go
design), spelled as the seed spells them, plus meetq's own local events."""

from __future__ import annotations

from meetq import events

SEED = {
    "EventMeetingCreated": "meeting.created",
    "EventMeetingStarted": "meeting.started",
    "EventUserJoined": "meeting.user_joined",
    "EventStreamStarted": "media.stream_started",
    "EventStreamStopped": "media.stream_stopped",
    "EventAITaskCreated": "ai.task_created",
    "EventAITaskCompleted": "ai.task_completed",
}


def test_the_seeds_event_names() -> None:
    ours = {
        "EventMeetingCreated": events.MEETING_CREATED,
        "EventMeetingStarted": events.MEETING_STARTED,
        "EventUserJoined": events.USER_JOINED,
        "EventStreamStarted": events.STREAM_STARTED,
        "EventStreamStopped": events.STREAM_STOPPED,
        "EventAITaskCreated": events.AI_TASK_CREATED,
        "EventAITaskCompleted": events.AI_TASK_COMPLETED,
    }
    assert ours == SEED
    assert set(SEED.values()) <= set(events.ALL)
    assert len(set(events.ALL)) == len(events.ALL)


def test_local_events_are_apart_from_the_domain_events() -> None:
    assert events.PUBSUB_RECONNECTED == "meetq.pubsub.reconnected"
    assert events.PUBSUB_GAP == "meetq.pubsub.gap"
    assert not set(events.INTERNAL) & set(events.ALL)
