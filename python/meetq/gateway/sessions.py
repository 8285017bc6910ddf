"""`ClientTaskManager`: client sessions and their tasks, between the gateway and the
dispatcher.

A session is a user in a meeting on one (possibly re-established) connection. Client task
types map to dispatcher types as in the seed (`ai.<x>` -> the AI type x, `media.*` ->
media_processing, `meeting.*` -> meeting_control, `chat.*` -> signaling); priorities come
as strings. `submit_task` waits for the outcome; `submit_task_async` pushes it to the
session's sender. A session whose connection dropped is `detached`: its outcomes are kept
(bounded) for `resume_grace` seconds and delivered when it is attached again, not dropped.
Idle sessions (no activity for `idle_timeout`, 30 min by default) and detached sessions
past their grace are cleaned up by one periodic sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meetq.dispatch.dispatcher import TaskDispatcher
from meetq.dispatch.types import TaskRequest, TaskResponse, TaskStatus, TaskType
from meetq.errors import InvalidSessionError, MeetqError
from meetq.priority import Priority

log = logging.getLogger("meetq.gateway.sessions")

_AI_TYPES = {
    TaskType.SPEECH_RECOGNITION,
    TaskType.EMOTION_DETECTION,
    TaskType.SYNTHESIS_DETECTION,
    TaskType.AUDIO_DENOISING,
    TaskType.VIDEO_ENHANCEMENT,
    TaskType.TEXT_TO_SPEECH,
}
_FAMILIES = {
    "media": TaskType.MEDIA_PROCESSING,
    "meeting": TaskType.MEETING_CONTROL,
    "chat": TaskType.SIGNALING,
}


class UnknownTaskTypeError(MeetqError):
    """A client task type that maps to no dispatcher type."""


class SessionLimitError(MeetqError):
    """The session already has its limit of tasks in flight."""


def map_client_type(client_type: str) -> TaskType:
    """The seed's client-type -> task-type mapping; raises UnknownTaskTypeError."""
    family, _, rest = client_type.partition(".")
    if family == "ai":
        if rest in _AI_TYPES:
            return TaskType(rest)
    elif family in _FAMILIES and rest:
        return _FAMILIES[family]
    raise UnknownTaskTypeError(f"unknown task type {client_type!r}")


@dataclass(slots=True)
class ClientTaskRequest:
    type: str
    session_id: str
    data: dict[str, Any] = field(default_factory=dict)
    priority: str | int | Priority = "normal"
    timeout: float = 30.0
    request_id: str = ""


@dataclass(slots=True)
class ClientTaskResponse:
    request_id: str
    status: str
    """"success" | "error" | "timeout"."""
    data: dict[str, Any] | None = None
    error: str | None = None
    processed_at: float = 0.0


Sender = Callable[[ClientTaskResponse], None]


@dataclass(slots=True, eq=False)
class Session:
    session_id: str
    user_id: int
    meeting_id: int
    sender: Sender | None = None
    last_activity: float = 0.0
    detached_at: float = 0.0
    in_flight: int = 0
    backlog: deque[ClientTaskResponse] | None = None
    """Outcomes kept while detached; made on the first one (an idle session has none)."""

    @property
    def detached(self) -> bool:
        return self.sender is None


def _client_response(request_id: str, resp: TaskResponse) -> ClientTaskResponse:
    if resp.status is TaskStatus.COMPLETED:
        status = "success"
    elif resp.status is TaskStatus.TIMEOUT:
        status = "timeout"
    else:
        status = "error"
    return ClientTaskResponse(
        request_id, status, resp.result, resp.error, resp.processed_at or time.time()
    )


class _Outcome:
    """The way back of one submitted task: the dispatcher calls `done` with its outcome,
    `failed` if its write failed, and `published` once it is written (when the caller
    asked). One small object per task (not a closure each)."""

    __slots__ = ("manager", "on_failed", "on_published", "request_id", "session")

    def __init__(
        self,
        manager: ClientTaskManager,
        session: Session,
        request_id: str,
        on_failed: Callable[[str, BaseException], None],
        on_published: Callable[[str], None] | None = None,
    ) -> None:
        self.manager = manager
        self.session = session
        self.request_id = request_id
        self.on_failed = on_failed
        self.on_published = on_published

    def published(self) -> None:
        if self.on_published is not None:
            self.on_published(self.request_id)

    def done(self, resp: TaskResponse) -> None:
        manager = self.manager
        self.session.in_flight -= 1
        out = _client_response(self.request_id or resp.task_id, resp)
        if out.status == "success":
            manager.total_success += 1
        else:
            manager.total_failed += 1
        manager._deliver(self.session, out)

    def failed(self, exc: BaseException) -> None:
        self.session.in_flight -= 1
        self.manager.total_failed += 1
        self.on_failed(self.request_id, exc)


_TYPE_CACHE_SIZE = 1024
"""Client types whose mapping is remembered (a client could send any number of them)."""


class ClientTaskManager:
    """Sessions and client tasks over a TaskDispatcher; see the module docstring."""

    def __init__(
        self,
        dispatcher: TaskDispatcher,
        *,
        idle_timeout: float = 1800.0,
        resume_grace: float = 30.0,
        max_in_flight: int = 32,
        max_backlog: int = 256,
        cleanup_interval: float = 60.0,
    ) -> None:
        self.dispatcher = dispatcher
        self.idle_timeout = idle_timeout
        self.resume_grace = resume_grace
        self.max_in_flight = max_in_flight
        self.max_backlog = max_backlog
        self.cleanup_interval = cleanup_interval
        self._sessions: dict[str, Session] = {}
        self._per_user: dict[int, int] = {}
        self._types: dict[str, TaskType] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.total_requests = 0
        self.total_success = 0
        self.total_failed = 0
        self.dropped_results = 0
        """Outcomes of sessions that never came back within their grace (or overflowed)."""

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def __aenter__(self) -> ClientTaskManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ sessions

    def register_session(
        self, session_id: str, user_id: int, meeting_id: int, sender: Sender | None = None
    ) -> Session:
        """Registers (or re-attaches) a session; a re-attached session gets its backlog
        of outcomes through `sender` at once."""
        now = time.monotonic()
        session = self._sessions.get(session_id)
        if session is None:
            session = Session(session_id, user_id, meeting_id, sender, now)
            self._sessions[session_id] = session
            self._per_user[user_id] = self._per_user.get(user_id, 0) + 1
            return session
        if session.user_id != user_id:
            raise InvalidSessionError(f"session {session_id!r} belongs to another user")
        session.meeting_id = meeting_id
        session.last_activity = now
        if sender is not None:
            self.attach(session, sender)
        return session

    def attach(self, session: Session, sender: Sender) -> int:
        """Gives a session its connection back; returns how many kept outcomes it sent."""
        session.sender = sender
        session.detached_at = 0.0
        backlog = session.backlog
        if not backlog:
            return 0
        sent = 0
        while backlog:
            sender(backlog.popleft())
            sent += 1
        session.backlog = None
        return sent

    def detach(self, session_id: str) -> None:
        """The session's connection dropped: keep it for `resume_grace` seconds."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.sender = None
            session.detached_at = time.monotonic()

    def unregister_session(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        left = self._per_user[session.user_id] - 1
        if left:
            self._per_user[session.user_id] = left
        else:
            del self._per_user[session.user_id]
        if session.backlog:
            self.dropped_results += len(session.backlog)
        return True

    def get_session(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise InvalidSessionError(f"unknown session {session_id!r}")
        return session

    def sessions_of(self, user_id: int) -> int:
        """How many sessions `user_id` has (kept per user: a connect does not walk them)."""
        return self._per_user.get(user_id, 0)

    # ------------------------------------------------------------------ tasks

    def _task_type(self, client_type: str) -> TaskType:
        """map_client_type, remembered for the client types seen (bounded)."""
        ttype = self._types.get(client_type)
        if ttype is None:
            ttype = map_client_type(client_type)
            if len(self._types) >= _TYPE_CACHE_SIZE:
                self._types.clear()
            self._types[client_type] = ttype
        return ttype

    def _request(self, session: Session, req: ClientTaskRequest) -> TaskRequest:
        ttype = self._task_type(req.type)
        try:
            priority = Priority.parse(req.priority)
        except ValueError as exc:
            raise UnknownTaskTypeError(str(exc)) from None
        return TaskRequest(
            type=ttype,
            payload=req.data,
            priority=priority,
            user_id=session.user_id,
            meeting_id=session.meeting_id,
            session_id=session.session_id,
            timeout=req.timeout,
        )

    async def submit_task(self, req: ClientTaskRequest) -> ClientTaskResponse:
        """Dispatches and waits. Raises InvalidSessionError, UnknownTaskTypeError,
        SessionLimitError."""
        session = self._take(req)
        task = self._request(session, req)
        self.total_requests += 1
        session.in_flight += 1
        try:
            resp = await self.dispatcher.dispatch_and_wait(task)
        except BaseException:
            self.total_failed += 1
            raise
        finally:
            session.in_flight -= 1
        out = _client_response(req.request_id or resp.task_id, resp)
        self._count(out)
        return out

    async def submit_task_async(self, req: ClientTaskRequest) -> str:
        """Dispatches; the outcome goes to the session's sender (or its backlog while it
        is detached). Returns the task id."""
        session = self._take(req)
        task = self._request(session, req)
        request_id = req.request_id
        session.in_flight += 1
        self.total_requests += 1

        def done(resp: TaskResponse) -> None:
            session.in_flight -= 1
            out = _client_response(request_id or resp.task_id, resp)
            self._count(out)
            self._deliver(session, out)

        try:
            pending = await self.dispatcher.dispatch_async(task, done)
        except BaseException:
            session.in_flight -= 1
            self.total_failed += 1
            raise
        return pending.task_id

    def submit_task_nowait(
        self, req: ClientTaskRequest, on_failed: Callable[[BaseException], None]
    ) -> str:
        """Like submit_task_async without awaiting the dispatch write (no Task per
        request); `on_failed(exc)` runs if that write fails. Returns the task id; raises
        as submit_task_async does."""
        session = self.get_session(req.session_id)
        try:
            priority = Priority.parse(req.priority)
        except ValueError as exc:
            raise UnknownTaskTypeError(str(exc)) from None
        return self.submit_nowait(
            session,
            req.request_id,
            req.type,
            req.data,
            priority,
            req.timeout,
            lambda _rid, exc: on_failed(exc),
        )

    def submit_nowait(
        self,
        session: Session,
        request_id: str,
        client_type: str,
        data: dict[str, Any],
        priority: Priority,
        timeout: float,
        on_failed: Callable[[str, BaseException], None],
        now: float | None = None,
        on_published: Callable[[str], None] | None = None,
    ) -> str:
        """The gateway's path: a request already parsed (priority a `Priority`) for a
        session it holds, staged in the dispatcher's current MULTI with no Task of its
        own; the outcome goes to the session's sender, `on_failed(request_id, exc)` runs
        if the write fails, `on_published(request_id)` once it is written. `now`
        (time.monotonic()) is the caller's clock read, when it has one. Raises
        UnknownTaskTypeError, SessionLimitError, NoRouteError."""
        ttype = self._types.get(client_type) or self._task_type(client_type)
        if session.in_flight >= self.max_in_flight:
            raise SessionLimitError(
                f"session {session.session_id!r} has {session.in_flight} tasks in flight"
            )
        session.last_activity = time.monotonic() if now is None else now
        task = TaskRequest(
            ttype,
            data,
            priority,
            session.user_id,
            session.meeting_id,
            session.session_id,
            timeout,
        )
        outcome = _Outcome(self, session, request_id, on_failed, on_published)
        tid = self.dispatcher.submit(
            task,
            outcome.done,
            outcome.failed,
            None if on_published is None else outcome.published,
        )
        session.in_flight += 1
        self.total_requests += 1
        return tid

    def _take(self, req: ClientTaskRequest) -> Session:
        session = self.get_session(req.session_id)
        if session.in_flight >= self.max_in_flight:
            raise SessionLimitError(
                f"session {session.session_id!r} has {session.in_flight} tasks in flight"
            )
        session.last_activity = time.monotonic()
        return session

    def _count(self, out: ClientTaskResponse) -> None:
        if out.status == "success":
            self.total_success += 1
        else:
            self.total_failed += 1

    def _deliver(self, session: Session, out: ClientTaskResponse) -> None:
        if self._sessions.get(session.session_id) is not session:
            self.dropped_results += 1  # unregistered meanwhile
            return
        sender = session.sender
        if sender is not None:
            try:
                sender(out)
            except Exception:
                log.exception("session %s: sending an outcome failed", session.session_id)
            return
        backlog = session.backlog
        if backlog is None:
            backlog = session.backlog = deque()
        elif len(backlog) >= self.max_backlog:
            backlog.popleft()
            self.dropped_results += 1
        backlog.append(out)

    # ------------------------------------------------------------------ cleanup

    def cleanup(self, now: float | None = None) -> int:
        """Drops idle sessions and detached ones past their grace; returns how many."""
        now = time.monotonic() if now is None else now
        gone = [
            sid
            for sid, s in self._sessions.items()
            if (s.detached and s.detached_at and now - s.detached_at > self.resume_grace)
            or (s.in_flight == 0 and now - s.last_activity > self.idle_timeout)
        ]
        for sid in gone:
            self.unregister_session(sid)
        return len(gone)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)  # a period, not synchronization
            try:
                n = self.cleanup()
                if n:
                    log.info("cleaned up %d sessions", n)
            except Exception:
                log.exception("session cleanup failed")

    def get_stats(self) -> dict[str, Any]:
        return {
            "total_requests": self.total_requests,
            "total_success": self.total_success,
            "total_failed": self.total_failed,
            "active_sessions": len(self._sessions),
            "dropped_results": self.dropped_results,
        }


__all__ = [
    "ClientTaskManager",
    "ClientTaskRequest",
    "ClientTaskResponse",
    "Session",
    "SessionLimitError",
    "UnknownTaskTypeError",
    "map_client_type",
]
