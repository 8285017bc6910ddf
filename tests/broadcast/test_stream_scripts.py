"""The Streams transitions: one documented Lua file each, loaded once, and each loads into a
real redis-server under the SHA the bus calls it by."""

from __future__ import annotations

from importlib import resources

from helpers import redis_client
from meetq.broadcast import scripts


def test_every_transition_is_its_own_documented_file() -> None:
    folder = resources.files("meetq._redis").joinpath("lua", "streams")
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".lua"))
    assert files == sorted(s.name for s in scripts.ALL)
    for script in scripts.ALL:
        text = folder.joinpath(script.name).read_text()
        assert text.startswith(f"-- {script.name}: ")
        assert "-- KEYS" in text and "-- ARGV:" in text
        assert script.source == text


async def test_every_script_loads_and_keeps_its_sha(redis_url: str) -> None:
    async with redis_client(redis_url) as r:
        for script in scripts.ALL:
            assert (await r.script_load(script.source)) == script.sha
