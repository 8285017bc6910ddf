"""ClientTaskManager over a real dispatcher and the services in their own process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from helpers import async_wait_until
from meetq import InvalidSessionError, TaskDispatcher, TaskType
from meetq.gateway import (
    ClientTaskManager,
    ClientTaskRequest,
    ClientTaskResponse,
    SessionLimitError,
    UnknownTaskTypeError,
)
from meetq.gateway.sessions import map_client_type


def test_seed_type_mapping() -> None:
    assert map_client_type("ai.speech_recognition") is TaskType.SPEECH_RECOGNITION
    assert map_client_type("ai.text_to_speech") is TaskType.TEXT_TO_SPEECH
    assert map_client_type("media.transcode") is TaskType.MEDIA_PROCESSING
    assert map_client_type("meeting.mute_all") is TaskType.MEETING_CONTROL
    assert map_client_type("chat.message") is TaskType.SIGNALING
    for bad in ("ai.recording", "ai.", "media", "video.x", ""):
        with pytest.raises(UnknownTaskTypeError):
            map_client_type(bad)


async def test_submit_task_waits_and_counts(redis_url: str, services: Any) -> None:
    async with TaskDispatcher(redis_url) as d, ClientTaskManager(d) as m:
        m.register_session("sess-1", user_id=1, meeting_id=2)
        ok = await m.submit_task(
            ClientTaskRequest(
                type="ai.speech_recognition",
                session_id="sess-1",
                data={"a": 1},
                priority="high",
                timeout=20,
                request_id="q1",
            )
        )
        assert ok == ClientTaskResponse(
            "q1",
            "success",
            {"echo": {"a": 1}, "user_id": 1, "meeting_id": 2},
            None,
            ok.processed_at,
        )
        bad = await m.submit_task(
            ClientTaskRequest(type="ai.synthesis_detection", session_id="sess-1")
        )
        assert bad.status == "error" and "model exploded" in (bad.error or "")
        late = await m.submit_task(
            ClientTaskRequest(
                type="ai.emotion_detection", session_id="sess-1", data={"sleep": 3}, timeout=0.3
            )
        )
        assert late.status == "timeout"
        assert m.get_stats() == {
            "total_requests": 3,
            "total_success": 1,
            "total_failed": 2,
            "active_sessions": 1,
            "dropped_results": 0,
        }
        with pytest.raises(InvalidSessionError):
            await m.submit_task(ClientTaskRequest(type="chat.x", session_id="nope"))
        with pytest.raises(UnknownTaskTypeError):
            await m.submit_task(ClientTaskRequest(type="chat.x", session_id="sess-1", priority="x"))
        assert m.unregister_session("sess-1")
        assert not m.unregister_session("sess-1")


async def test_async_submit_pushes_to_the_session(redis_url: str, services: Any) -> None:
    got: list[ClientTaskResponse] = []
    event = asyncio.Event()

    def sender(resp: ClientTaskResponse) -> None:
        got.append(resp)
        if len(got) == 3:
            event.set()

    async with TaskDispatcher(redis_url) as d, ClientTaskManager(d, max_in_flight=3) as m:
        m.register_session("s", 1, 2, sender=sender)
        for i in range(3):
            await m.submit_task_async(
                ClientTaskRequest(
                    type="ai.emotion_detection",
                    session_id="s",
                    data={"sleep": 0.3},
                    request_id=f"r{i}",
                )
            )
        with pytest.raises(SessionLimitError):
            await m.submit_task_async(ClientTaskRequest(type="chat.x", session_id="s"))
        await asyncio.wait_for(event.wait(), 20)
        assert sorted(r.request_id for r in got) == ["r0", "r1", "r2"]
        assert m.get_session("s").in_flight == 0


async def test_detached_session_keeps_results_then_expires(redis_url: str, services: Any) -> None:
    async with TaskDispatcher(redis_url) as d, ClientTaskManager(d, resume_grace=60) as m:
        m.register_session("s", 1, 2)
        await m.submit_task_async(
            ClientTaskRequest(type="ai.speech_recognition", session_id="s", request_id="k")
        )
        await async_wait_until(lambda: m.get_session("s").backlog, timeout=20)
        got: list[ClientTaskResponse] = []
        session = m.register_session("s", 1, 2, sender=got.append)
        assert [r.request_id for r in got] == ["k"] and not session.backlog
        with pytest.raises(InvalidSessionError):
            m.register_session("s", user_id=99, meeting_id=2)
        m.detach("s")
        assert m.cleanup(now=time.monotonic() + 30) == 0
        assert m.cleanup(now=time.monotonic() + 61) == 1
        assert m.get_stats()["active_sessions"] == 0


async def test_idle_sessions_are_cleaned_up(redis_url: str) -> None:
    async with TaskDispatcher(redis_url) as d, ClientTaskManager(d) as m:
        assert m.idle_timeout == 1800
        m.register_session("a", 1, 1, sender=lambda r: None)
        m.register_session("b", 2, 1, sender=lambda r: None)
        m.get_session("b").last_activity = time.monotonic() - 1000
        assert m.cleanup(now=time.monotonic() + 1000) == 1
        assert [s for s in ("a", "b") if m._sessions.get(s)] == ["a"]


async def test_sessions_are_counted_per_user_and_keep_no_backlog_until_needed(
    redis_url: str,
) -> None:
    async with TaskDispatcher(redis_url) as d, ClientTaskManager(d) as m:
        for sid, user in (("a", 1), ("b", 1), ("c", 2)):
            assert m.register_session(sid, user, 9).backlog is None
        m.register_session("a", 1, 9)  # again: still one session
        assert (m.sessions_of(1), m.sessions_of(2), m.sessions_of(3)) == (2, 1, 0)
        assert m.unregister_session("a")
        assert not m.unregister_session("a")
        m.get_session("c").last_activity = time.monotonic() - 10_000
        assert m.cleanup() == 1
        assert (m.sessions_of(1), m.sessions_of(2)) == (1, 0)
        assert m._per_user == {1: 1}


def test_client_type_mappings_are_remembered_within_a_bound() -> None:
    m = ClientTaskManager(TaskDispatcher("redis://127.0.0.1:1"))  # never started
    for i in range(3000):
        assert m._task_type(f"media.kind{i}") is TaskType.MEDIA_PROCESSING
        assert len(m._types) <= 1024
    with pytest.raises(UnknownTaskTypeError):
        m._task_type("ai.nope")
    assert "ai.nope" not in m._types
