"""Pure-Python twin of the native timer wheel (`rust/src/wheel.rs`).

Same structure, so the same observable behaviour down to the handle values: 6 levels of 64
slots with a 1 ms tick, an occupied-slot bitmap per level, cascading, a slab of entries with
a LIFO free stack and generation counters (handle = generation << 32 | index), a PENDING list
for deadlines already past and an OVERFLOW list for deadlines beyond the levels' 2^36 ms
block. An insertion-ordered dict per slot stands in for the intrusive linked list: O(1)
append and O(1) removal, iterated in insertion order.
"""

from __future__ import annotations

import operator
from typing import Any

_BITS = 6
_SLOT_MASK = (1 << _BITS) - 1
_LEVELS = 6
_RANGE_MASK = (1 << (_BITS * _LEVELS)) - 1
_PENDING = _LEVELS << _BITS
_OVERFLOW = _PENDING + 1
_FREE = -1
_UNKNOWN = -1  # `_next` memo: not computed since the last change
_U64 = 1 << 64
_U32_MASK = 0xFFFFFFFF


def _u64(value: Any) -> int:
    """Accepts what the native side accepts: an int in [0, 2**64)."""
    v = operator.index(value)
    if not 0 <= v < _U64:
        raise OverflowError(f"{v} is out of range for a u64 time or handle")
    return v


class TimerWheel:
    """Hierarchical timer wheel (1 ms tick) holding arbitrary objects."""

    __slots__ = (
        "_deadline",
        "_elapsed",
        "_free",
        "_gen",
        "_item",
        "_len",
        "_list",
        "_lists",
        "_next",
        "_occupied",
    )

    def __init__(self, start_ms: int = 0) -> None:
        self._elapsed = _u64(start_ms)
        # The slab: entry i is (_deadline[i], _item[i], _gen[i], _list[i]).
        self._deadline: list[int] = []
        self._item: list[Any] = []
        self._gen: list[int] = []
        self._list: list[int] = []  # the list holding entry i, or _FREE
        self._free: list[int] = []  # LIFO, like the native free stack
        self._lists: list[dict[int, None]] = [{} for _ in range(_OVERFLOW + 1)]
        self._occupied = [0] * _LEVELS  # bit s of [l]: slot s of level l is non-empty
        self._len = 0
        self._next: int | None = None  # memo of next_deadline(); _UNKNOWN when stale

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"TimerWheel(len={self._len}, elapsed={self._elapsed})"

    @property
    def elapsed(self) -> int:
        """The time the wheel was last advanced to."""
        return self._elapsed

    def insert(self, deadline_ms: int, item: Any) -> int:
        """Adds `item` due at `deadline_ms`; returns the handle that cancels it."""
        d = _u64(deadline_ms)
        if self._free:
            idx = self._free.pop()
            self._deadline[idx] = d
            self._item[idx] = item
        else:
            idx = len(self._deadline)
            if idx >= _U32_MASK:
                raise MemoryError("timer wheel holds at most 2^32 - 1 timers")
            self._deadline.append(d)
            self._item.append(item)
            self._gen.append(0)
            self._list.append(_FREE)
        self._place(idx, d)
        self._len += 1
        n = self._next
        if n != _UNKNOWN and (n is None or d < n):
            self._next = d
        return (self._gen[idx] << 32) | idx

    def cancel(self, handle: int) -> bool:
        """Removes the live timer behind `handle`; False if it fired, was cancelled or never
        existed."""
        h = _u64(handle)
        idx = h & _U32_MASK
        if idx >= len(self._list):
            return False
        lst = self._list[idx]
        if lst == _FREE or self._gen[idx] != h >> 32:
            return False
        members = self._lists[lst]
        del members[idx]
        if not members and lst < _PENDING:
            self._occupied[lst >> _BITS] &= ~(1 << (lst & _SLOT_MASK))
        if self._next == self._deadline[idx]:
            self._next = _UNKNOWN
        self._release(idx)
        return True

    def advance(self, now_ms: int) -> list[Any]:
        """Moves the clock to `now_ms`; returns the due items in deadline order (ties in
        insertion order), past-at-insert ones first."""
        now = _u64(now_ms)
        out: list[Any] = []
        changed = False
        pending = self._lists[_PENDING]
        if pending:
            self._lists[_PENDING] = {}
            for idx in sorted(pending, key=self._deadline.__getitem__):  # stable
                out.append(self._release(idx))
            changed = True
        if now > self._elapsed:
            while True:
                exp = self._next_expiration()
                if exp is None or exp[1] > now:
                    break
                self._process(exp[0], exp[1], out)
                changed = True
            self._elapsed = now
        if changed:
            self._next = _UNKNOWN
        return out

    def next_deadline(self) -> int | None:
        """The earliest deadline of the live timers, or None when empty."""
        n = self._next
        if n == _UNKNOWN:
            n = self._next = self._compute_next()
        return n

    # -- internals ---------------------------------------------------------------------

    def _compute_next(self) -> int | None:
        if self._lists[_PENDING]:
            return self._list_min(_PENDING)
        exp = self._next_expiration()
        if exp is None:
            return None
        if exp[0] < (1 << _BITS):  # a level-0 slot holds exactly one deadline
            return exp[1]
        return self._list_min(exp[0])

    def _list_min(self, lst: int) -> int:
        d = self._deadline
        return min(d[i] for i in self._lists[lst])

    def _next_expiration(self) -> tuple[int, int] | None:
        e = self._elapsed
        for level, bits in enumerate(self._occupied):
            if bits:
                slot = (bits & -bits).bit_length() - 1
                shift = _BITS * level
                level_start = e & ~((1 << (shift + _BITS)) - 1)
                return (level << _BITS) | slot, level_start + (slot << shift)
        if self._lists[_OVERFLOW]:
            return _OVERFLOW, self._list_min(_OVERFLOW) & ~_RANGE_MASK
        return None

    def _process(self, lst: int, time: int, out: list[Any]) -> None:
        self._elapsed = time
        members = self._lists[lst]
        self._lists[lst] = {}
        if lst < _PENDING:
            self._occupied[lst >> _BITS] &= ~(1 << (lst & _SLOT_MASK))
        d = self._deadline
        for idx in members:
            if d[idx] <= time:
                out.append(self._release(idx))
            else:
                self._place(idx, d[idx])

    def _place(self, idx: int, d: int) -> None:
        e = self._elapsed
        if d <= e:
            lst = _PENDING
        else:
            masked = (e ^ d) | _SLOT_MASK
            if masked > _RANGE_MASK:
                lst = _OVERFLOW
            else:
                level = (masked.bit_length() - 1) // _BITS
                slot = (d >> (_BITS * level)) & _SLOT_MASK
                self._occupied[level] |= 1 << slot
                lst = (level << _BITS) | slot
        self._list[idx] = lst
        self._lists[lst][idx] = None

    def _release(self, idx: int) -> Any:
        self._len -= 1
        self._gen[idx] = (self._gen[idx] + 1) & _U32_MASK
        self._list[idx] = _FREE
        self._free.append(idx)
        item = self._item[idx]
        self._item[idx] = None
        return item
