"""`RespConnection`: meetq's own pipelined asyncio connection to Redis, for the hot paths.

redis-py spends most of a pipelined batch in Python: one `Encoder.encode` call, several
small `bytes.join`s and a list append per argument, then a parser object per reply. Here a
whole batch is encoded by one call into one buffer (`encode_commands`: Cython, or its pure
twin), written with ONE `transport.write`, and its replies are parsed by `hiredis.Reader`
straight from `data_received`, with no read task and no per-command future.

Wire model. The connection keeps a FIFO of pending requests; a request is one command
(`execute`) or a batch (`execute_many`) and owns one future. Redis answers in order, so each
complete reply belongs to the request at the head of the FIFO; a batch collects its replies
into a list and resolves once the last one arrives. Any number of coroutines may call
`execute`/`execute_many` concurrently on one connection: their requests are pipelined.
A caller cancelled while waiting leaves its slot in the FIFO, so the replies that follow
still reach their owners (its reply is read and dropped).

Errors.
- An error reply of `execute` is raised as redis-py's exception for it (the `ResponseError`
  family: `NoScriptError`, `NoPermissionError`, `AuthenticationError`, ...).
- In `execute_many` an error reply is returned *in place*, as that exception instance, and
  the other commands' replies are kept (a batch is not a transaction: Redis ran the rest).
  `raise_on_error=True` raises the first one instead, once every reply has been read.
- A lost connection (server gone, reset, protocol violation, `close()`) fails every pending
  request with `meetq.MeetqConnectionError` whose `__cause__` is the underlying error, and
  every later call likewise. There is no automatic reconnect: a `RespConnection` is one
  socket, and reconnect policy (backoff, script reload) belongs to its owner.

A silent server. With `reply_timeout`, a request not answered within that many seconds
fails the connection like a lost one (cause `TimeoutError`): one timer per connection,
re-armed for the oldest request, not one per call. It must exceed the longest blocking
command sent on the connection.

Do not send blocking commands (BLPOP, XREAD BLOCK, SUBSCRIBE) on a connection that others
pipeline on: every request queued behind them would wait. Give them a connection of their own.

URLs: `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS; the query may say
`ssl_cert_reqs=none|optional|required`, `ssl_ca_certs=<file>`, `ssl_check_hostname=false`,
or pass `ssl_context=`), `unix://[[user]:password@]/path/to.sock[?db=N]`. A password sends
AUTH (with the user, for an ACL user), a db other than 0 sends SELECT.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeAlias, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis._parsers import BaseParser
from redis.exceptions import NoScriptError, RedisError

from meetq._native import encode_command, encode_commands
from meetq.errors import MeetqConnectionError

__all__ = ["Arg", "ConnectionSettings", "RespConnection", "RespScript"]

Arg: TypeAlias = bytes | bytearray | memoryview | str | int | float
"""One command argument (str is sent as UTF-8, numbers as their repr, like redis-py)."""


def _parse_error(message: str) -> RedisError:
    # redis-py's own mapping of "-CODE text" replies to exception classes (NOSCRIPT, NOPERM,
    # WRONGPASS, READONLY, LOADING, ...), so callers catch the same classes as with redis-py.
    # All derive from RedisError; most from ResponseError (WRONGPASS/NOAUTH and LOADING map
    # to AuthenticationError/BusyLoadingError, which redis-py files under ConnectionError).
    error: RedisError = BaseParser.parse_error(message)  # type: ignore[no-untyped-call]
    return error


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """What `RespConnection.connect` makes of a URL."""

    host: str | None = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ssl_cert_reqs: str = "required"
    ssl_ca_certs: str | None = None
    ssl_check_hostname: bool = True

    @classmethod
    def from_url(cls, url: str) -> ConnectionSettings:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        db = int(query.get("db", 0))
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"unix URL without a socket path: {url!r}")
            return cls(host=None, path=parts.path, db=db, username=username, password=password)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported URL scheme {parts.scheme!r} (redis, rediss, unix)")
        path = parts.path.strip("/")
        if path:
            db = int(path)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db,
            username=username,
            password=password,
            tls=parts.scheme == "rediss",
            ssl_cert_reqs=query.get("ssl_cert_reqs", "required").lower(),
            ssl_ca_certs=query.get("ssl_ca_certs"),
            ssl_check_hostname=query.get("ssl_check_hostname", "true").lower()
            not in ("false", "0", "no"),
        )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ssl_ca_certs)
        reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
            self.ssl_cert_reqs, ssl.CERT_REQUIRED
        )
        if reqs == ssl.CERT_NONE or not self.ssl_check_hostname:
            ctx.check_hostname = False
        ctx.verify_mode = reqs
        return ctx


class _Pending:
    """One request in the FIFO: a single command (`results is None`) or a batch of `count`."""

    __slots__ = ("count", "future", "raise_on_error", "results", "sent")

    def __init__(
        self,
        future: asyncio.Future[Any],
        count: int,
        batch: bool,
        raise_on_error: bool,
        sent: float,
    ) -> None:
        self.future = future
        self.count = count
        self.results: list[Any] | None = [] if batch else None
        self.raise_on_error = raise_on_error
        self.sent = sent


class RespConnection(asyncio.Protocol):
    """One pipelined Redis connection; create it with `await RespConnection.connect(url)`."""

    def __init__(self, reply_timeout: float | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._reply_timeout = reply_timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._reader = hiredis.Reader(replyError=_parse_error)
        self._pending: deque[_Pending] = deque()
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None
        self._closed = False
        self._closed_future: asyncio.Future[None] = self._loop.create_future()
        self._writable: asyncio.Event | None = None  # set while the transport is paused

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        timeout: float = 5.0,
        reply_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        client_name: str | None = None,
    ) -> RespConnection:
        """Opens, authenticates and selects the db; raises `MeetqConnectionError` on failure.
        `timeout` bounds the opening, `reply_timeout` every later request (module docstring).

        An AUTH or SELECT refused by the server raises its redis-py error instead
        (`AuthenticationError`, `ResponseError`): retrying would not help.
        """
        settings = ConnectionSettings.from_url(url)
        loop = asyncio.get_running_loop()
        conn = cls(reply_timeout)
        try:
            async with asyncio.timeout(timeout):
                if settings.path is not None:
                    await loop.create_unix_connection(lambda: conn, settings.path)
                else:
                    tls = ssl_context or (settings.ssl_context() if settings.tls else None)
                    await loop.create_connection(
                        lambda: conn,
                        settings.host or "127.0.0.1",
                        settings.port,
                        ssl=tls,
                        server_hostname=settings.host if tls else None,
                    )
                handshake: list[tuple[Arg, ...]] = []
                if settings.password is not None:
                    if settings.username:
                        handshake.append(("AUTH", settings.username, settings.password))
                    else:
                        handshake.append(("AUTH", settings.password))
                if settings.db:
                    handshake.append(("SELECT", settings.db))
                if client_name:
                    handshake.append(("CLIENT", "SETNAME", client_name))
                if handshake:
                    await conn.execute_many(handshake, raise_on_error=True)
        except RedisError:
            await conn.close()
            raise
        except (OSError, TimeoutError, MeetqConnectionError, ssl.SSLError) as exc:
            await conn.close()
            if isinstance(exc, MeetqConnectionError):
                raise
            where = settings.path or f"{settings.host}:{settings.port}"
            raise MeetqConnectionError(f"cannot connect to redis at {where}: {exc!r}") from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Closes the socket; pending requests fail with `MeetqConnectionError`."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()
            await asyncio.shield(self._closed_future)
        else:
            self._fail_all(ConnectionAbortedError("connection closed"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once the connection can no longer be used (closed or lost)."""
        return self._closed or self._lost is not None

    @property
    def pending(self) -> int:
        """Requests written and not yet fully answered."""
        return len(self._pending)

    # -- requests ------------------------------------------------------------------------

    async def execute(self, *args: Arg) -> Any:
        """Sends one command and returns its reply (bytes, int, list, None); raises errors."""
        transport = self._check_open()
        future = self._loop.create_future()
        self._push(_Pending(future, 1, False, True, self._loop.time()))
        transport.write(encode_command(args))
        if self._writable is not None:
            await self._writable.wait()
        return await future

    async def execute_many(
        self, commands: Iterable[Sequence[Arg]], *, raise_on_error: bool = False
    ) -> list[Any]:
        """Sends a batch with one write and returns its replies in order.

        An error reply is returned in place as its exception instance, or, with
        `raise_on_error=True`, the first one is raised after all replies were read.
        """
        if not isinstance(commands, list | tuple):
            commands = list(commands)
        if not commands:
            self._check_open()
            return []
        future = self._send(commands, raise_on_error)
        if self._writable is not None:
            await self._writable.wait()
        return await future

    def send_many(self, commands: Sequence[Sequence[Arg]]) -> asyncio.Future[list[Any]]:
        """`execute_many` without a coroutine: writes now and returns the future of the
        replies (errors in place), for a caller that waits on it together with other
        things. It does not wait for a paused transport: keep such batches small."""
        if not commands:
            raise ValueError("send_many needs at least one command")
        return self._send(commands, False)

    def _send(
        self, commands: Sequence[Sequence[Arg]], raise_on_error: bool
    ) -> asyncio.Future[list[Any]]:
        transport = self._check_open()
        data = encode_commands(commands)
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        self._push(_Pending(future, len(commands), True, raise_on_error, self._loop.time()))
        transport.write(data)
        return future

    def _push(self, request: _Pending) -> None:
        self._pending.append(request)
        if self._reply_timeout is not None and self._watchdog is None:
            self._watchdog = self._loop.call_at(request.sent + self._reply_timeout, self._watch)

    def _watch(self) -> None:
        """The reply timeout: fails the connection when the oldest request is overdue."""
        self._watchdog = None
        if not self._pending or self._reply_timeout is None or self.closed:
            return
        deadline = self._pending[0].sent + self._reply_timeout
        if self._loop.time() < deadline:
            self._watchdog = self._loop.call_at(deadline, self._watch)
            return
        self._lost = TimeoutError(f"no reply from redis within {self._reply_timeout}s")
        if self._transport is not None:
            self._transport.abort()
        self._fail_all(self._lost)

    def _check_open(self) -> asyncio.Transport:
        if self._closed or self._transport is None:
            raise MeetqConnectionError("redis connection closed") from self._lost
        if self._lost is not None:
            raise MeetqConnectionError("redis connection lost") from self._lost
        return self._transport

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if not pending:
                    raise RedisError("reply without a request: the stream is out of sync")
                head = pending[0]
                results = head.results
                if results is None:
                    pending.popleft()
                    future = head.future
                    if not future.done():
                        if isinstance(reply, Exception):  # error replies only
                            future.set_exception(reply)
                        else:
                            future.set_result(reply)
                    continue
                results.append(reply)
                count = head.count
                # Drain as much of this batch as is already buffered in one tight loop.
                while len(results) < count:
                    reply = reader.gets()
                    if reply is False:
                        return
                    results.append(reply)
                pending.popleft()
                self._finish_batch(head, results)
        except Exception as exc:  # hiredis.ProtocolError or a desync: the stream is unusable
            self._lost = exc
            if self._transport is not None:
                self._transport.abort()
            self._fail_all(exc)

    @staticmethod
    def _finish_batch(head: _Pending, results: list[Any]) -> None:
        future = head.future
        if future.done():
            return
        if head.raise_on_error:
            for reply in results:
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                    return
        future.set_result(results)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:
            self._lost = exc or (
                ConnectionAbortedError("connection closed")
                if self._closed
                else ConnectionResetError("connection closed by the server")
            )
        self._fail_all(self._lost)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._writable is not None:
            self._writable.set()
            self._writable = None
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.Event()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()
            self._writable = None

    def _fail_all(self, cause: BaseException) -> None:
        pending, self._pending = self._pending, deque()
        for request in pending:
            if not request.future.done():
                error = MeetqConnectionError(f"redis connection lost: {cause!r}")
                error.__cause__ = cause
                request.future.set_exception(error)


class RespScript:
    """A Lua script run by EVALSHA on a `RespConnection`, loaded again on NOSCRIPT."""

    def __init__(self, source: str | bytes) -> None:
        self.source = source.encode() if isinstance(source, str) else source
        self.sha = hashlib.sha1(self.source).hexdigest()

    def command(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> tuple[Arg, ...]:
        """The EVALSHA command, for batching several calls in one `execute_many`."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def load(self, conn: RespConnection) -> None:
        await conn.execute("SCRIPT", "LOAD", self.source)

    async def __call__(
        self, conn: RespConnection, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Any:
        command = self.command(keys, args)
        try:
            return await conn.execute(*command)
        except NoScriptError:
            await self.load(conn)
            return await conn.execute(*command)

    async def run_many(
        self, conn: RespConnection, calls: Sequence[tuple[Sequence[Arg], Sequence[Arg]]]
    ) -> list[Any]:
        """Runs many (keys, args) calls in one round trip; NOSCRIPT ones are loaded and rerun.

        A NOSCRIPT reply means that call did not run, so running it again is safe. Other
        error replies are returned in place, as in `execute_many`.
        """
        replies = await conn.execute_many([self.command(k, a) for k, a in calls])
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            await self.load(conn)
            again = await conn.execute_many([self.command(*calls[i]) for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies
