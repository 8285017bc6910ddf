"""The Lua scripts of `RedisMessageQueue`: every state transition of a message is one file
in `lua/` (package data), read once at import and prepended with `lua/prelude.lua` (the
shared helpers). Each file's header lists its KEYS and ARGV.

Each script receives the whole key list of `keys.QueueKeys.all` (all under one hash tag,
so it is Cluster-safe) and reads the clock with `TIME`, so the clocks of workers never
matter. A message moves ready -> inflight (dequeue) -> gone (ack) / delayed (retry) / dlq,
and delayed -> ready, inflight -> ready (lease expired) are done lazily by every dequeue.

Lease tokens: every delivery gets a fresh token "<seq>:<deliveries>:<retries>" (`seq` is a
counter in `stats`), stored in field `id\\0l` of the `msg` hash while the message is in
flight and replaced by "-:<deliveries>:<retries>" when it leaves flight. Ack, fail, extend
and release act only when the caller's token is the current one, so an ack from a worker
whose lease expired (and whose message was delivered again) can never delete the new
delivery. One field for token and counters keeps a dequeue at two hash fields per message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError


def _read(filename: str) -> str:
    return resources.files("meetq._redis").joinpath("lua", filename).read_text("utf-8")


_PRELUDE = _read("prelude.lua")


class Script:
    """One Lua script called by EVALSHA, sent whole after NOSCRIPT (e.g. a Redis restart)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, body: str | None = None) -> None:
        self.name = name
        self.source = _PRELUDE + (body if body is not None else _read(f"{name}.lua"))
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(
        self, client: redis.asyncio.Redis, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        return await self.run(client.execute_command, keys, args)

    async def run(
        self, execute: Callable[..., Awaitable[Any]], keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Calls through any `execute(*command)` (redis-py or meetq's RespConnection). After
        NOSCRIPT the script goes as EVAL, which also caches it: one command, so it runs on
        the server that said NOSCRIPT even when the client's connections reach two (a
        failover half done; a SCRIPT LOAD then EVALSHA pair could load one, run the other)."""
        try:
            return await execute(*self.command(keys, args))
        except NoScriptError:
            return await execute(*self.eval_command(keys, args))

    def call_sync(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The same call from a thread with a blocking client (the lease renewer)."""
        run: Callable[..., Any] = client.execute_command
        try:
            return run(*self.command(keys, args))
        except NoScriptError:
            return run(*self.eval_command(keys, args))

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The EVALSHA command, for a batch that holds other commands too."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def eval_command(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVAL", self.source, len(keys), *keys, *args)


dequeue = Script("dequeue")
publish = Script("publish")
fail = Script("fail")
extend = Script("extend")
release = Script("release")
requeue_dlq = Script("requeue_dlq")
purge_dlq = Script("purge_dlq")
stats = Script("stats")
ack_reply = Script("ack_reply")
task_timeout = Script("task_timeout")
task_cancel = Script("task_cancel")
