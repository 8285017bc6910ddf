"""`Leases`: the table of messages this process holds and the thread that renews them.

This is the only cross-thread code of the queue. The loop owns `held` (id -> lease token):
the fetcher adds what it leased, outcomes remove what they finished. The renewer thread
reads a copy of it every third of the lease and extends every lease still held, on a
blocking connection of its own, so even a handler hogging the event loop (CPU-bound sync
code) cannot let its lease lapse. A dict copy is atomic under the GIL, so the thread never
sees a half-made change. For a shared client that cannot be cloned (Sentinel, Cluster,
custom pools), renewal runs as a task on the loop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import redis

from meetq._redis import scripts
from meetq._redis.links import Endpoint, Outage
from meetq.queue.config import QueueConfig

log = logging.getLogger("meetq.queue.leases")

CHUNK = 2000
"""(id, token) pairs per extend call."""


class Leases:
    """Held leases of one queue in this process, and their renewal."""

    def __init__(
        self, endpoint: Endpoint, keys: list[str], config: QueueConfig, queue_name: str
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.queue_name = queue_name
        self._keys = keys
        self.held: dict[str, str] = {}
        """id -> lease token of everything leased here and not yet finished (loop only)."""
        self._sync: redis.Redis | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.held)

    @property
    def renewing(self) -> bool:
        """Whether a renewer (thread or loop task) is running."""
        if self._thread is not None:
            return self._thread.is_alive()
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._stop.clear()
        interval = max(5.0, self.config.visibility_timeout / 3)
        self._sync = self.endpoint.sync_client(interval)
        if self._sync is not None:
            self._thread = threading.Thread(
                target=self._renew_in_thread, name=f"meetq-lease-{self.queue_name}", daemon=True
            )
            self._thread.start()
        else:
            # a client we cannot clone: renew on the loop, which a handler hogging the loop
            # can delay
            self._task = asyncio.get_running_loop().create_task(self._renew_on_loop())

    async def stop(self) -> None:
        """Stops the renewer and closes its connection (always, whatever failed before)."""
        self._stop.set()
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            if self._thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
                self._thread = None
        finally:
            if self._sync is not None:
                self._sync.close()
                self._sync = None

    def _batches(self, held: list[tuple[str, str]]) -> list[list[Any]]:
        out = []
        for start in range(0, len(held), CHUNK):
            args: list[Any] = [self.config.lease_ms]
            for pair in held[start : start + CHUNK]:
                args.extend(pair)
            out.append(args)
        return out

    def _outage(self) -> Outage:
        return Outage(f"queue {self.queue_name!r} lease renewal", self.config.retry_budget)

    def _renew_in_thread(self) -> None:
        interval = max(0.05, self.config.visibility_timeout / 3)
        outage = self._outage()  # logs one warning per outage, one error past the budget
        while not self._stop.wait(interval):
            held = list(self.held.copy().items())
            sync = self._sync
            if not held or sync is None:
                continue
            for args in self._batches(held):
                try:
                    scripts.extend.call_sync(sync, self._keys, args)
                except Exception as exc:
                    outage.failed(exc)
                    break
            else:
                outage.succeeded()

    async def _renew_on_loop(self) -> None:
        interval = max(0.05, self.config.visibility_timeout / 3)
        client = self.endpoint.client
        outage = self._outage()
        while True:
            await asyncio.sleep(interval)  # a period, not synchronization
            for args in self._batches(list(self.held.items())):
                try:
                    await scripts.extend(client, self._keys, args)
                except Exception as exc:
                    outage.failed(exc)
                    break
            else:
                outage.succeeded()


__all__ = ["Leases"]
