"""`ClusterRouter`: commands for keys of many slots over one connection per master.

A `SlotConnection` serves the keys of ONE slot (a queue's). Components whose commands
touch many slots in one call (the broadcast buses: a topic or a shard channel per slot,
acks of several topics in one write) use a router instead: each command goes to the master
of its key's slot, the commands of one call are grouped per master (one write each, the
masters' batches in parallel) and the replies come back in call order. Redirections are
followed as `SlotConnection` does (MOVED re-reads the slot map and resends to the new
owner; ASK sends ASKING and the command to the target once); a lost connection re-reads
the map and tries once more, so a promoted replica is found without a restart.

Same calls as a `Link` (`execute`, `execute_many`, `load`, `close`): a bus holds one or
the other. Keyless commands (INFO, TIME, PING) go to the master of slot 0; `load` loads a
script on every master (a promoted replica has an empty script cache).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from meetq._redis.cluster import ClusterSettings, _owner, _redirect, key_slot, slot_map
from meetq._redis.connection import Arg, RespConnection
from meetq.errors import MeetqConnectionError

__all__ = ["ClusterRouter", "command_key"]

_KEY_AT = {
    b"XGROUP": 2,
    b"XINFO": 2,
    b"OBJECT": 2,
}
"""Commands whose key is not their first argument (EVALSHA/EVAL/XREADGROUP aside)."""


def _bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bytearray | memoryview):
        return bytes(arg)
    return str(arg).encode()


def command_key(command: Sequence[Arg]) -> bytes | None:
    """The key (or shard channel) that decides where `command` runs; None when keyless."""
    name = _bytes(command[0]).upper()
    if name in (b"EVALSHA", b"EVAL", b"FCALL"):
        return _bytes(command[3]) if len(command) > 3 and int(command[2]) > 0 else None
    if name in (b"XREAD", b"XREADGROUP"):
        for i, arg in enumerate(command):
            if _bytes(arg).upper() == b"STREAMS":
                return _bytes(command[i + 1])
        return None
    if name in (b"INFO", b"TIME", b"PING", b"SCRIPT", b"CLIENT", b"CLUSTER", b"WAIT"):
        return None
    at = _KEY_AT.get(name, 1)
    return _bytes(command[at]) if len(command) > at else None


class ClusterRouter:
    """One connection per master, commands routed by their key's slot; see the module."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        reply_timeout: float | None = None,
        max_redirects: int = 5,
    ) -> None:
        self._settings = ClusterSettings.from_url(url)
        self._timeout = timeout
        self._reply_timeout = reply_timeout
        self._max_redirects = max_redirects
        self._ranges: list[tuple[int, int, str, int]] | None = None
        self._conns: dict[tuple[str, int], RespConnection] = {}
        self._opening: dict[tuple[str, int], asyncio.Future[RespConnection]] = {}
        self._map_lock: asyncio.Lock | None = None
        self._map_version = 0
        self.redirects = 0
        """MOVED/ASK replies followed so far (for tests and metrics)."""

    @property
    def is_open(self) -> bool:
        return any(not c.closed for c in self._conns.values())

    # -- the slot map and the connections ------------------------------------------------------

    async def refresh(self, seen: int | None = None) -> None:
        """Re-reads the slot map (once for all callers that found version `seen` stale)."""
        if self._map_lock is None:
            self._map_lock = asyncio.Lock()
        async with self._map_lock:
            if seen is not None and seen != self._map_version:
                return  # another caller refreshed it meanwhile
            ranges = await slot_map(self._settings, timeout=self._timeout)
            self._ranges = ranges
            self._map_version += 1
            host, port = ranges[0][2], ranges[0][3]
            self._settings = self._settings.with_seed(host, port)
            masters = {(h, p) for _, _, h, p in ranges}
            for addr in [a for a in self._conns if a not in masters]:
                await self._drop(addr)  # not a master any more

    async def owner(self, slot: int) -> tuple[str, int]:
        """The master serving `slot` by the map as last read (read first when none)."""
        if self._ranges is None:
            await self.refresh()
        assert self._ranges is not None
        return _owner(self._ranges, slot)

    async def masters(self) -> list[tuple[str, int]]:
        """Every master of the map as last read, in slot order."""
        if self._ranges is None:
            await self.refresh()
        assert self._ranges is not None
        return list(dict.fromkeys((h, p) for _, _, h, p in self._ranges))

    async def _node(self, addr: tuple[str, int]) -> RespConnection:
        conn = self._conns.get(addr)
        if conn is not None and not conn.closed:
            return conn
        opening = self._opening.get(addr)
        if opening is None:  # one opening per master, however many callers wait for it
            opening = self._opening[addr] = asyncio.ensure_future(self._connect(addr))
        return await asyncio.shield(opening)

    async def _connect(self, addr: tuple[str, int]) -> RespConnection:
        try:
            conn = await RespConnection.connect(
                self._settings.url_for(*addr),
                timeout=self._timeout,
                reply_timeout=self._reply_timeout,
            )
        finally:
            self._opening.pop(addr, None)
        self._conns[addr] = conn  # kept even when the caller that asked was cancelled
        return conn

    async def _drop(self, addr: tuple[str, int]) -> None:
        conn = self._conns.pop(addr, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await conn.close()

    # -- commands ---------------------------------------------------------------------------

    async def execute(self, *args: Arg) -> Any:
        reply = (await self.execute_many([args]))[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def execute_many(
        self, commands: Sequence[Sequence[Arg]], *, slot: int | None = None
    ) -> list[Any]:
        """Each command on its slot's master (one write per master, in parallel); replies
        in order, error replies in place. Commands of one master keep their order.
        `slot`: the caller knows every command is in that slot (a batch on one channel or
        topic), so no key is hashed."""
        if not commands:
            return []
        replies: list[Any] = [None] * len(commands)
        if slot is not None:
            await self._run_slot(slot, commands, list(range(len(commands))), replies)
            return replies
        by_slot: dict[int, list[int]] = {}
        for i, command in enumerate(commands):
            by_slot.setdefault(self._slot(command), []).append(i)
        if len(by_slot) == 1:
            slot, todo = next(iter(by_slot.items()))
            await self._run_slot(slot, commands, todo, replies)
            return replies
        # the slots of one master in one write: group by owner as the map says now
        by_node: dict[tuple[str, int], list[int]] = {}
        for slot, todo in by_slot.items():
            by_node.setdefault(await self.owner(slot), []).extend(todo)
        await asyncio.gather(
            *(
                self._run_node(addr, commands, sorted(todo), replies)
                for addr, todo in by_node.items()
            )
        )
        return replies

    def _slot(self, command: Sequence[Arg]) -> int:
        key = command_key(command)
        return 0 if key is None else key_slot(key)

    async def _run_slot(
        self, slot: int, commands: Sequence[Sequence[Arg]], todo: list[int], replies: list[Any]
    ) -> None:
        await self._run_node(await self.owner(slot), commands, todo, replies)

    async def _run_node(
        self,
        addr: tuple[str, int],
        commands: Sequence[Sequence[Arg]],
        todo: list[int],
        replies: list[Any],
    ) -> None:
        """Sends `commands[todo]` to `addr`, then follows redirections until all ran."""
        batch = [commands[i] for i in todo]
        version = self._map_version
        try:
            conn = await self._node(addr)
            got = await conn.execute_many(batch)
        except MeetqConnectionError:
            # the master may be gone (a failover): where does each slot live now?
            await self._drop(addr)
            await self.refresh(version)
            got = await self._send_each(commands, todo)
        for i, reply in zip(todo, got, strict=True):
            replies[i] = reply
        for _ in range(self._max_redirects):
            redirected = [(i, rd) for i in todo if (rd := _redirect(replies[i]))]
            if not redirected:
                return
            self.redirects += 1
            if any(kind == "MOVED" for _, (kind, _, _) in redirected):
                await self.refresh(self._map_version)
            for i, (kind, host, port) in redirected:
                if kind == "ASK":
                    target = await self._node((host, port))
                    replies[i] = (await target.execute_many([("ASKING",), commands[i]]))[1]
            moved = [i for i, (kind, _, _) in redirected if kind == "MOVED"]
            if moved:
                again = await self._send_each(commands, moved)
                for i, reply in zip(moved, again, strict=True):
                    replies[i] = reply
        raise MeetqConnectionError(f"still redirected after {self._max_redirects} tries")

    async def _send_each(self, commands: Sequence[Sequence[Arg]], todo: list[int]) -> list[Any]:
        """`commands[todo]` each to its slot's owner by the current map (one try)."""
        by_node: dict[tuple[str, int], list[int]] = {}
        for i in todo:
            by_node.setdefault(await self.owner(self._slot(commands[i])), []).append(i)
        out: dict[int, Any] = {}
        for addr, idx in by_node.items():
            try:
                conn = await self._node(addr)
                got = await conn.execute_many([commands[i] for i in idx])
            except MeetqConnectionError:
                await self._drop(addr)
                raise
            out.update(zip(idx, got, strict=True))
        return [out[i] for i in todo]

    async def load(self, source: str) -> None:
        """SCRIPT LOAD on every master (as redis-py's RedisCluster.script_load does)."""
        await self.refresh()
        for addr in await self.masters():
            try:
                conn = await self._node(addr)
                await conn.execute("SCRIPT", "LOAD", source)
            except (MeetqConnectionError, RedisError):
                await self._drop(addr)
                raise

    async def close(self) -> None:
        for opening in list(self._opening.values()):
            with contextlib.suppress(Exception):
                await opening
        for addr in list(self._conns):
            await self._drop(addr)
