"""`FollowingConnection`: a `RespConnection` to a server that can move.

A cluster slot's master and the sentinels' master change with a failover or a resharding.
A subclass says how to find the server now (`_locate`); this base keeps one connection to
it, replaces it when it is lost or when the caller finds it stale (MOVED, READONLY), and
offers the `RespConnection` calls the hot paths use. Concurrent callers that find the
same connection stale replace it once: a replacement is keyed on the connection that
failed, not on a flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

from meetq._redis.connection import Arg, RespConnection
from meetq.errors import MeetqConnectionError


class FollowingConnection:
    def __init__(
        self,
        *,
        timeout: float = 5.0,
        reply_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout
        self._reply_timeout = reply_timeout
        self._ssl_context = ssl_context
        self._conn: RespConnection | None = None
        self._lock = asyncio.Lock()

    async def _locate(self) -> RespConnection:
        """An open connection to where the server is now."""
        raise NotImplementedError

    async def _open(self, url: str) -> RespConnection:
        return await RespConnection.connect(
            url,
            timeout=self._timeout,
            reply_timeout=self._reply_timeout,
            ssl_context=self._ssl_context,
        )

    async def _connection(self, stale: RespConnection | None = None) -> RespConnection:
        """The current connection; a new one when there is none or it is `stale`."""
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.closed and conn is not stale:
                return conn
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
                self._conn = None
            self._conn = await self._locate()
            return self._conn

    async def _send(self, commands: list[Sequence[Arg]]) -> tuple[RespConnection, list[Any]]:
        """One write; after a lost connection, once more to where the server is now.

        Not a MULTI/EXEC batch: its outcome is unknown once the connection is lost (EXEC
        may have run, its reply lost), and its plain commands are not idempotent (RPUSH
        of a task id twice runs it twice). It raises instead, so the caller decides
        by what it can check: the dispatcher probes its first task's body or outcome, the
        queue's publisher retries through its deduplicating script. (The lost connection is
        closed, so the next call finds the server anew.)"""
        conn = await self._connection()
        try:
            return conn, await conn.execute_many(commands)
        except MeetqConnectionError:
            if commands and _is_multi(commands[0]):
                raise
            conn = await self._connection(stale=conn)
            return conn, await conn.execute_many(commands)

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._conn is None or self._conn.closed

    async def execute(self, *args: Arg) -> Any:
        reply = (await self.execute_many([args]))[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def send_many(self, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]]:
        return asyncio.ensure_future(self.execute_many(commands))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def _is_multi(command: Sequence[Arg]) -> bool:
    head = command[0]
    return (
        isinstance(head, str | bytes)
        and bytes(head.encode() if isinstance(head, str) else head).upper() == b"MULTI"
    )
