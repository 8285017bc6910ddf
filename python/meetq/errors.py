"""Every error meetq raises derives from `MeetqError`, so callers can catch one class."""

from __future__ import annotations

from redis.exceptions import ResponseError


class MeetqError(Exception):
    """Base of all meetq errors."""


class QueueFullError(MeetqError):
    """A bounded buffer had no room (scheduler submit, `emit_wait` past its timeout)."""


class NoRouteError(MeetqError):
    """A task type that no route names was dispatched."""


class InvalidSessionError(MeetqError):
    """A client task named a session that is not registered."""


class TaskNotFoundError(MeetqError):
    """A task id that this component has never seen (or has forgotten)."""


class MessageTooLargeError(MeetqError):
    """An encoded message is larger than the configured limit."""


class MalformedMessageError(MeetqError):
    """Stored bytes that do not decode to a valid message."""


class MeetqConnectionError(MeetqError):
    """A connection failed after its retry budget; `__cause__` keeps the underlying error."""


class DispatcherStoppedError(MeetqError):
    """A TaskDispatcher stopped (or was never started) while a caller waited on a task."""


class InvalidArgumentError(MeetqError, ValueError):
    """An argument meetq cannot use (a negative count, a queue name with braces, ...)."""


class RedisCommandError(MeetqError, ResponseError):
    """Redis refused a command (e.g. a key of the wrong type, written by someone else);
    `__cause__` keeps redis-py's error (it is a redis-py `ResponseError` too)."""
