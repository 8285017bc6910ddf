"""A small asyncio HTTP/1.1 server for `/metrics` and the dashboard (no framework needed).

It serves a handful of routes on loopback: plain responses (one request per connection,
`Connection: close`) and Server-Sent Events streams, which stay open and are written as
the application pushes. Requests are bounded (header and body sizes, a read timeout), so
a bad client gets a 4xx and never holds the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson

log = logging.getLogger("meetq.ops.http")

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20
READ_TIMEOUT = 10.0


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body) if self.body else {}


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: object, status: int = 200) -> Response:
        return cls(status, orjson.dumps(data), "application/json")

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        return cls.json({"error": message}, status)


@dataclass(slots=True)
class EventStream:
    """A Server-Sent Events response: each item of `events` is (event name, JSON data)."""

    events: AsyncIterator[tuple[str, object]]


Handler = Callable[[Request], Awaitable[Response | EventStream]]


class HttpServer:
    """Routes by (method, path); a path ending in '/' also matches everything under it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._routes: dict[tuple[str, str], Handler] = {}
        self._prefixes: list[tuple[str, str, Handler]] = []
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    def route(self, method: str, path: str, handler: Handler) -> None:
        if path.endswith("/") and path != "/":
            self._prefixes.append((method, path, handler))
        else:
            self._routes[(method, path)] = handler

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEADER_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            if self._conns:
                await asyncio.wait(set(self._conns))
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _find(self, method: str, path: str) -> Handler | None:
        handler = self._routes.get((method, path))
        if handler is not None:
            return handler
        for m, prefix, h in self._prefixes:
            if m == method and path.startswith(prefix):
                return h
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                request = await _read_request(reader)
            if isinstance(request, Response):
                await _write(writer, request)
                return
            handler = self._find(request.method, request.path)
            if handler is None:
                allowed = any(p == request.path for _, p in self._routes)
                status = 405 if allowed else 404
                await _write(writer, Response.error(status, HTTPStatus(status).phrase))
                return
            try:
                result = await handler(request)
            except Exception as exc:
                log.exception("handler for %s %s failed", request.method, request.path)
                result = Response.error(500, f"{type(exc).__name__}: {exc}")
            if isinstance(result, EventStream):
                await _stream(writer, result)
            else:
                await _write(writer, result)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> Request | Response:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return Response.error(431, "request header too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return Response.error(400, "bad request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return Response.error(400, "bad header line")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return Response.error(400, "bad Content-Length")
    if length < 0 or length > MAX_BODY_BYTES:
        return Response.error(413, "request body too large")
    body = await reader.readexactly(length) if length else b""
    split = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
    return Request(method.upper(), split.path or "/", query, headers, body)


async def _write(writer: asyncio.StreamWriter, response: Response) -> None:
    reason = HTTPStatus(response.status).phrase
    head = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "Cache-Control: no-store",
        *(f"{k}: {v}" for k, v in response.headers.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
    await writer.drain()


async def _stream(writer: asyncio.StreamWriter, stream: EventStream) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
        b"Connection: close\r\nX-Accel-Buffering: no\r\n\r\n"
    )
    await writer.drain()
    try:
        async for name, data in stream.events:
            writer.write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
            await writer.drain()
    finally:
        close = getattr(stream.events, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
