"""The one module that imports meetq's native extensions.

Each native structure has a pure-Python twin with the same API and semantics. The backend
is chosen once, at import: `MEETQ_BACKEND=pure` forces the twins, `MEETQ_BACKEND=native`
makes a missing extension an error, and by default a missing extension falls back to the
twins with one warning. Everything else in meetq imports these names from here.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

from meetq._pure import resp as _resp
from meetq._pure import ring as _ring
from meetq._pure import sched as _sched
from meetq._pure import stage as _stage
from meetq._pure import wheel as _wheel

Backend = Literal["native", "pure"]

_choice = os.environ.get("MEETQ_BACKEND", "").strip().lower() or "auto"
if _choice not in ("auto", "native", "pure"):
    raise ImportError(f"MEETQ_BACKEND must be 'native' or 'pure', not {_choice!r}")

native_modules: dict[str, Any] | None = None
if _choice != "pure":
    try:
        from meetq import _cy_resp, _cy_stage, _meetq_rs

        native_modules = {
            "rs": _meetq_rs,
            "resp": _cy_resp,
            "stage": _cy_stage,
        }
    except ImportError as exc:
        if _choice == "native":
            raise
        warnings.warn(
            f"meetq native extensions unavailable ({exc}); using the pure-Python backend",
            RuntimeWarning,
            stacklevel=2,
        )

BACKEND: Backend = "native" if native_modules else "pure"

RingBuffer: Any
TimerWheel: Any
LocalEvent: Any
encode_command: Any
encode_commands: Any
stage: Any
Task: Any
SchedulerCore: Any
register_task_enums: Any

if native_modules:
    RingBuffer = native_modules["rs"].RingBuffer
    TimerWheel = native_modules["rs"].TimerWheel
    LocalEvent = native_modules["rs"].LocalEvent
    encode_command = native_modules["resp"].encode_command
    encode_commands = native_modules["resp"].encode_commands
    stage = native_modules["stage"].stage
    Task = native_modules["rs"].Task
    SchedulerCore = native_modules["rs"].SchedulerCore
    register_task_enums = native_modules["rs"].register_task_enums
else:
    RingBuffer = _ring.RingBuffer
    TimerWheel = _wheel.TimerWheel
    LocalEvent = _ring.LocalEvent
    encode_command = _resp.encode_command
    encode_commands = _resp.encode_commands
    stage = _stage.stage
    Task = _sched.Task
    SchedulerCore = _sched.SchedulerCore
    register_task_enums = _sched.register_task_enums


def backend() -> Backend:
    """Which implementation of the native structures is active: "native" or "pure"."""
    return BACKEND
