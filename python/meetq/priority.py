"""Four strict priority levels shared by every queue in meetq."""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, value: Priority | int | str) -> Priority:
        """Accepts an int, a member, or a case-insensitive name such as "high"."""
        if type(value) is cls:
            return value  # the common case, without the enum machinery (~2 us)
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f"unknown priority {value!r}") from None
        return cls(value)
