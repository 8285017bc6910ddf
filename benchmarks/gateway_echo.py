"""Bare WebSocket echo servers, the floor of the gateway benchmark (run as a script).

usage: gateway_echo.py picows|websockets PORT

Both echo every text frame back, with compression off and the same small buffers the
gateway uses, so the gateway's cost is measured against the library's own. Prints
"ready" when listening; exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys
from typing import Any

import uvloop


async def serve_picows(port: int, stop: asyncio.Event) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                transport.send(WSMsgType.TEXT, frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await ws_create_server(
        lambda _req: Echo(), "127.0.0.1", port, read_buffer_init_size=1024, backlog=4096
    )
    print("ready", flush=True)
    await stop.wait()
    server.close()


async def serve_websockets(port: int, stop: asyncio.Event) -> None:
    import logging

    from websockets.asyncio.server import ServerConnection, serve

    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # clients leaving abruptly

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    kw: dict[str, Any] = {
        "compression": None,
        "max_size": 64 * 1024,
        "max_queue": 4,
        "write_limit": 16 * 1024,
        "ping_interval": None,
        "backlog": 4096,
    }
    async with serve(echo, "127.0.0.1", port, **kw):
        print("ready", flush=True)
        await stop.wait()


def main() -> None:
    lib, port = sys.argv[1], int(sys.argv[2])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if lib == "picows":
            await serve_picows(port, stop)
        else:
            await serve_websockets(port, stop)

    uvloop.run(run())


if __name__ == "__main__":
    main()
