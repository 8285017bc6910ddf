"""Errors of the AI path: one class per StackFlow error code, each carrying code and message.

A node's error object `{"code": -6, "message": "..."}` becomes `UnitNotFoundError` with
`.code == -6`; callers can catch `StackFlowError` for all of them. Conditions the protocol
has no code for (a deadline passed, a node vanished, a socket file in use) get a code of
their own below -1000 so they can never collide with the framework's.
"""

from __future__ import annotations

from meetq.errors import MeetqError


class StackFlowError(MeetqError):
    """An error of the StackFlow protocol or of a node; `.code` and `.message` as sent."""

    code: int = -1

    def __init__(self, message: str = "", code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(f"[{self.code}] {message}" if message else f"[{self.code}]")


class ProtocolError(StackFlowError):
    """Bytes that do not follow the wire format (bad framing, not JSON, no request_id)."""

    code = -2


class JsonFormatError(StackFlowError):
    code = -2


class InferencePushError(StackFlowError):
    """The request could not be queued towards the node (its queue is full)."""

    code = -4


class ModelLoadError(StackFlowError):
    code = -5


class UnitNotFoundError(StackFlowError):
    """The work_id (or unit) is unknown to the node."""

    code = -6


class UnitCallError(StackFlowError):
    code = -9


class TaskRunError(StackFlowError):
    """The model raised while running the request."""

    code = -11


class NoSuchActionError(StackFlowError):
    code = -18


class TaskFullError(StackFlowError):
    code = -21


class InferenceDataEmptyError(StackFlowError):
    code = -24


class StreamIndexError(StackFlowError):
    code = -25


class StackFlowTimeoutError(StackFlowError, TimeoutError):
    """A call's deadline passed without the node's answer."""

    code = -1001


class NodeUnavailableError(StackFlowError):
    """The node serving a work_id went away (its subscription closed); re-setup is under way."""

    code = -1002


class SocketInUseError(StackFlowError):
    """A socket file this process must bind is held by another live process."""

    code = -1003


class ClientClosedError(StackFlowError):
    """The client or node was stopped while the call was in progress."""

    code = -1004


_BY_CODE: dict[int, type[StackFlowError]] = {
    cls.code: cls
    for cls in (
        JsonFormatError,
        InferencePushError,
        ModelLoadError,
        UnitNotFoundError,
        UnitCallError,
        TaskRunError,
        NoSuchActionError,
        TaskFullError,
        InferenceDataEmptyError,
        StreamIndexError,
    )
}


def error_for(code: int, message: str) -> StackFlowError:
    """The exception for a node's error object (unknown codes -> plain StackFlowError)."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else StackFlowError(message, code)
