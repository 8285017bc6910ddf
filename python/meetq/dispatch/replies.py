"""The dispatcher's reply reader: one blocking connection draining its reply lists.

A dispatcher process owns one reply list per queue it dispatches to
(`meetq:{Q}:reply:<name>`, in the queue's hash slot so the worker's final script can
write it). However many tasks are outstanding, that is O(queues) Redis state: no
per-task key, no SUBSCRIBE, no polling. One write per round holds
[BLPOP every list, LPOP every list N]: the LPOPs run the moment the BLPOP returns, so a
burst of replies costs one round trip per N, and while lists stay full the next round
skips the BLPOP. A list added while the BLPOP waits is picked up by unblocking the
connection (CLIENT UNBLOCK), never by a shorter poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from meetq._core.backoff import backoff
from meetq._redis.links import Link

log = logging.getLogger("meetq.dispatch.replies")

_DRAIN = 512
"""Replies taken per list per round trip."""


class ReplyReader:
    """Reads reply lists on `link` and hands each raw reply to `on_replies`."""

    def __init__(
        self,
        link: Link,
        control: Link,
        on_replies: Callable[[list[bytes]], None],
        block_timeout: float,
    ) -> None:
        self._link = link
        self._control = control  # runs CLIENT UNBLOCK for the blocked connection
        self._on_replies = on_replies
        self._block_timeout = block_timeout
        self._keys: list[str] = []
        self._changed = asyncio.Event()
        self._blocked_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._unblocking: set[asyncio.Future[None]] = set()
        self._stopping = False
        self.rounds = 0
        """Round trips made (a benchmark reads it)."""

    def add_key(self, key: str) -> None:
        if key in self._keys:
            return
        self._keys.append(key)
        self._changed.set()
        if self._blocked_id is not None:
            task = asyncio.ensure_future(self._unblock())
            self._unblocking.add(task)
            task.add_done_callback(self._unblocking.discard)

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="meetq-replies")

    async def stop(self) -> None:
        self._stopping = True
        self._changed.set()
        task = self._task
        if task is None:
            return
        deadline = asyncio.get_running_loop().time() + self._block_timeout + 2.0
        while not task.done() and asyncio.get_running_loop().time() < deadline:
            await self._unblock()
            await asyncio.wait({task}, timeout=0.05)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._task = None

    async def _unblock(self) -> None:
        """CLIENT UNBLOCK of the reader's connection. The BLPOP may not have reached Redis
        yet (another socket), so a miss is retried briefly while the same wait is on."""
        bid = self._blocked_id
        for _ in range(50):
            if bid is None or self._blocked_id != bid:
                return
            with contextlib.suppress(Exception):
                if await self._control.execute("CLIENT", "UNBLOCK", bid):
                    return
            await asyncio.sleep(0.002)  # the BLPOP is still on its way to Redis

    async def _run(self) -> None:
        """Reads until stop(); connection errors are retried with backoff (the link opens
        a fresh connection on the next call), so a Redis restart only pauses replies."""
        attempt = 0
        more = False
        while not self._stopping:
            keys = list(self._keys)
            if not keys:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                commands: list[tuple[Any, ...]] = [("LPOP", k, _DRAIN) for k in keys]
                if not more:
                    self._blocked_id = await self._link.client_id()
                    if self._stopping:
                        break
                    self._changed.clear()
                    if len(keys) != len(self._keys):
                        continue
                    commands.insert(0, ("BLPOP", *keys, self._block_timeout))
                replies = await self._link.execute_many(commands)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._blocked_id = None
                pause = backoff(attempt)
                attempt += 1
                log.warning("reply reader: %r; retrying in %.2fs", exc, pause)
                await asyncio.sleep(pause)  # backoff between reconnect attempts
                continue
            self._blocked_id = None
            self.rounds += 1
            attempt = 0
            got: list[bytes] = []
            more = False
            if len(replies) > len(keys):
                first = replies.pop(0)
                if isinstance(first, list) and len(first) == 2:
                    got.append(first[1])
                elif isinstance(first, Exception):
                    log.warning("reply reader: BLPOP failed: %r", first)
            for reply in replies:
                if isinstance(reply, list):
                    got.extend(reply)
                    more = more or len(reply) >= _DRAIN
                elif isinstance(reply, Exception):
                    log.warning("reply reader: LPOP failed: %r", reply)
            if got:
                try:
                    self._on_replies(got)
                except Exception:
                    log.exception("reply reader: handling %d replies failed", len(got))
