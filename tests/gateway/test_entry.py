"""The `meetq gateway` entry points: serve() runs the whole stack until told to stop;
run_from_args() refuses a missing or weak secret before starting anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect

from helpers import free_port
from meetq.gateway import make_token
from meetq.gateway.server import GatewayConfig, read_secret, run_from_args, serve

SECRET = "entry-secret-0123456789abcdef"


async def test_serve_runs_until_stopped(redis_url: str) -> None:
    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    server = asyncio.ensure_future(
        serve(redis_url, SECRET, GatewayConfig(port=port), stop=stop, ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 30)
    token = make_token(SECRET, 3, 4)
    async with connect(f"ws://127.0.0.1:{port}/?token={token}", compression=None) as ws:
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        await ws.send('{"request_id": "x", "type": "nope"}')
        assert orjson.loads(await ws.recv())["code"] == "unknown_type"
    stop.set()
    stats = await asyncio.wait_for(server, 30)
    assert stats["connections_total"] == 1


def test_secret_from_file_env_or_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    assert read_secret(None, str(path)) == SECRET
    monkeypatch.setenv("MY_SECRET", SECRET)
    assert read_secret("MY_SECRET", None) == SECRET
    monkeypatch.setenv("MY_SECRET", "short")
    with pytest.raises(SystemExit):
        read_secret("MY_SECRET", None)
    with pytest.raises(SystemExit):
        run_from_args(["--secret-env", "UNSET_SECRET_VARIABLE_FOR_TEST", "--port", "1"])
