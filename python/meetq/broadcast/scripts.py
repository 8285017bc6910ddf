"""The Lua transitions of the Streams bus, one file each in `meetq/_redis/lua/streams/`
(beside the queue's in `lua/`, which have a prelude of their own), read once at import and
run by EVALSHA on a `Link` (loaded again on NOSCRIPT)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from meetq._redis.links import Link
from meetq._redis.router import ClusterRouter


class LuaScript:
    """One transition: its source, its SHA1, and `run(link, keys, args)`."""

    def __init__(self, filename: str) -> None:
        self.name = filename
        self.source = (resources.files("meetq._redis") / "lua" / "streams" / filename).read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def run(
        self, link: Link | ClusterRouter, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        command = self.command(keys, args)
        try:
            return await link.execute(*command)
        except NoScriptError:
            await link.load(self.source)
            return await link.execute(*command)


CLAIM = LuaScript("claim.lua")
DEAD_LETTER = LuaScript("dead_letter.lua")
TRIM = LuaScript("trim.lua")
REAP = LuaScript("reap.lua")
ALL = (CLAIM, DEAD_LETTER, TRIM, REAP)
