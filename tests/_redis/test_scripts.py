"""The Lua transitions: one file each under `meetq/_redis/lua/`, each documenting its KEYS
and ARGV, all loadable by a real redis-server."""

from __future__ import annotations

from importlib import resources

from helpers import redis_client
from meetq._redis import scripts

NAMES = [
    "dequeue",
    "publish",
    "fail",
    "extend",
    "release",
    "requeue_dlq",
    "purge_dlq",
    "stats",
    "ack_reply",
]


def test_every_transition_is_its_own_documented_file() -> None:
    lua = resources.files("meetq._redis").joinpath("lua")
    files = sorted(p.name for p in lua.iterdir() if p.name.endswith(".lua"))
    # the queue's transitions, beside other components' (the dispatcher's task_*.lua)
    assert set(files) >= {*(f"{n}.lua" for n in NAMES), "prelude.lua"}
    for name in files:
        if name != "prelude.lua":
            text = lua.joinpath(name).read_text()
            assert text.startswith(f"-- {name}: ") and "-- KEYS" in text and "-- ARGV:" in text
    for name in NAMES:
        text = lua.joinpath(f"{name}.lua").read_text()
        assert text.startswith(f"-- {name}.lua: ")
        assert "-- KEYS" in text and "-- ARGV:" in text
        script = getattr(scripts, name)
        assert script.source.endswith(text)  # loaded once, behind the shared prelude


async def test_every_script_loads_and_keeps_its_sha(redis_url: str) -> None:
    async with redis_client(redis_url) as r:
        for name in NAMES:
            script = getattr(scripts, name)
            assert await r.script_load(script.source) == script.sha
