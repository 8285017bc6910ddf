"""StackFlowClient: meetq in the unit-manager's role towards StackFlow nodes.

Calls go out on two paths: node RPC (setup, exit, taskinfo) over one REQ per unit, and
inference requests published on each work_id's XPUB. Every answer comes back on ONE PULL
socket and is matched to its call by `request_id`, so any number of inferences run
concurrently on one node. Every call has a deadline (one loop timer, no task per call);
replies are drained in batches by `reactor.Reader` and matched to their calls by
`calls.InFlight`.

A node that dies is noticed when its subscription closes: its in-flight calls fail with
`NodeUnavailableError` at once, and the client sets the same model up again in the
background (with backoff) until the node is back. The work_id the caller holds stays
valid: it is mapped to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import zmq

from meetq._core.backoff import backoff
from meetq.ai import protocol as p
from meetq.ai import sockfiles
from meetq.ai.calls import Call, InFlight, SetupRecord, ack_error
from meetq.ai.errors import (
    ClientClosedError,
    NodeUnavailableError,
    ProtocolError,
    StackFlowError,
    StackFlowTimeoutError,
    UnitNotFoundError,
    error_for,
)
from meetq.ai.reactor import Reader, configure
from meetq.ai.registry import Registry, Slot
from meetq.ai.rpc import RpcCaller
from meetq.ai.sender import DEFAULT_FORMAT, RequestSender

log = logging.getLogger(__name__)


class StackFlowClient:
    """Drives StackFlow nodes whose sockets live under `base_dir` (default `/tmp`)."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str] = "/tmp",
        *,
        call_timeout: float = 10.0,
        setup_timeout: float = 30.0,
        stop_timeout: float = 1.0,
        reply_port: int = 8000,
        resetup: bool = True,
        hwm: int = 100_000,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.call_timeout = call_timeout
        self.setup_timeout = setup_timeout
        self.stop_timeout = stop_timeout
        self.resetup = resetup
        self.hwm = hwm  # per-work_id request queue; beyond it a publish is InferencePushError
        self._reply_path = self.base_dir / "llm" / f"{reply_port}.sock"
        self.reply_url = sockfiles.ipc_url(self._reply_path)
        self._own_ctx = context is None
        self._ctx: zmq.Context[Any] | None = context
        self._registry: Registry | None = None
        self._pull: Reader | None = None
        self._callers: dict[str, RpcCaller] = {}
        self._inflight = InFlight()
        self._calls = self._inflight.calls  # request_id -> Call (the same dict, never rebound)
        self._sender: RequestSender | None = None  # made when the client starts
        self._setups: dict[str, SetupRecord] = {}  # handle -> record
        self._by_live: dict[str, SetupRecord] = {}  # live work_id -> record
        self._ids = itertools.count()
        self._prefix = os.urandom(3).hex()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    # --- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._loop = self._inflight.loop = asyncio.get_running_loop()
        if self._ctx is None:
            self._ctx = zmq.Context()
        try:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            self._registry = Registry(self._ctx, self.base_dir, self._on_lost, hwm=self.hwm)
            sockfiles.claim(self._reply_path)
            pull = configure(self._ctx.socket(zmq.PULL))
            pull.bind(self.reply_url)
        except BaseException:
            # Nothing half-started stays behind: no bound file, no open context.
            if self._registry is not None:
                self._registry.close()
                self._registry = None
            if self._own_ctx:
                self._ctx.destroy(linger=0)
                self._ctx = None
            raise
        self._pull = Reader(pull, self._inflight.on_reply)
        self._sender = RequestSender(
            self._inflight, self.reply_url, self._by_live, self._new_id, self._loop
        )
        self._started = True

    async def stop(self) -> None:
        """Exits this client's work_ids (best effort, `stop_timeout` at most), fails what is
        in flight with ClientClosedError, closes every socket and removes its files."""
        if not self._started:
            return
        for record in self._setups.values():
            if record.resetup is not None:
                record.resetup.cancel()
        live = [r.live for r in self._setups.values() if r.live is not None]
        if live:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.stop_timeout):
                    await asyncio.gather(
                        *(self._exit_live(w, self.stop_timeout) for w in live),
                        return_exceptions=True,
                    )
        for record in self._setups.values():
            if record.resetup is not None:
                with contextlib.suppress(BaseException):
                    await record.resetup
        self._started = False
        self._inflight.close(ClientClosedError("client stopped"))
        if self._sender is not None:
            self._sender.clear()
        for caller in self._callers.values():
            caller.close()
        self._callers.clear()
        if self._pull is not None:
            self._pull.close()
            self._pull = None
        sockfiles.remove(self._reply_path)
        if self._registry is not None:
            self._registry.close()
            self._registry = None
        self._setups.clear()
        self._by_live.clear()
        if self._own_ctx and self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None

    async def __aenter__(self) -> StackFlowClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- setup / exit / taskinfo ------------------------------------------------------

    async def setup(
        self,
        unit: str,
        model: str,
        *,
        response_format: str = DEFAULT_FORMAT,
        input: str = DEFAULT_FORMAT,
        enoutput: bool = True,
        timeout: float | None = None,
        **extra: Any,
    ) -> str:
        """Sets a model up on the unit's node; returns the work_id (e.g. `llm.0`), valid
        until `exit`, across restarts of the node."""
        data: dict[str, Any] = {
            "model": model,
            "response_format": response_format,
            "input": input,
            "enoutput": enoutput,
            **extra,
        }
        work_id = await self._setup_once(unit, data, timeout or self.setup_timeout)
        record = SetupRecord(handle=work_id, unit=unit, request=data, live=work_id)
        self._setups[work_id] = record
        self._by_live[work_id] = record
        return work_id

    async def _setup_once(self, unit: str, data: dict[str, Any], timeout: float) -> str:
        loop = self._running()
        deadline = loop.time() + timeout
        rid = self._new_id()
        request = {
            "request_id": rid,
            "work_id": unit,
            "action": p.SETUP,
            "object": f"{unit}.setup",
            "data": data,
        }
        reply = await self._control(unit, p.SETUP, rid, request, deadline)
        slot = self._registry.slots.get(reply.work_id) if self._registry else None
        if slot is None:
            raise UnitNotFoundError(f"node answered setup with unregistered {reply.work_id!r}")
        await self._subscribed(slot, deadline)
        return reply.work_id

    async def exit(self, work_id: str, *, timeout: float | None = None) -> None:
        """Ends a work_id on its node and forgets it (no re-setup afterwards)."""
        record = self._setups.pop(work_id, None)
        if record is None:
            await self._exit_live(work_id, timeout or self.call_timeout)
            return
        if record.resetup is not None:
            record.resetup.cancel()
        if record.live is not None:
            self._by_live.pop(record.live, None)
            await self._exit_live(record.live, timeout or self.call_timeout)

    async def _exit_live(self, work_id: str, timeout: float) -> None:
        loop = self._running()
        slot = self._registry.slots.get(work_id) if self._registry else None
        if slot is not None:
            slot.exiting = True
        unit = work_id.rsplit(".", 1)[0]
        rid = self._new_id()
        try:
            await self._control(
                unit, p.EXIT, rid, p.control_request(rid, work_id, p.EXIT), loop.time() + timeout
            )
        finally:
            if self._registry is not None:
                self._registry.release(work_id)

    async def taskinfo(self, work_id: str, *, timeout: float | None = None) -> Any:
        """A node's task list (`work_id` = unit name) or one work_id's setup."""
        loop = self._running()
        live = self._live(work_id) if "." in work_id else work_id
        unit = live.rsplit(".", 1)[0] if "." in live else live
        rid = self._new_id()
        request = p.control_request(rid, live, p.TASKINFO)
        deadline = loop.time() + (timeout or self.call_timeout)
        return (await self._control(unit, p.TASKINFO, rid, request, deadline)).data

    async def list_actions(self, unit: str, *, timeout: float | None = None) -> list[str]:
        """The actions a unit's node offers (its `list_action`)."""
        reply = await self._caller(unit).call(
            [p.LIST_ACTION.encode(), b""], timeout or self.call_timeout
        )
        try:
            return list(p.loads(reply)["actions"])
        except (ProtocolError, KeyError, TypeError):
            raise ProtocolError(f"malformed list_action reply {reply!r}") from None

    async def _control(
        self, unit: str, action: str, rid: str, request: dict[str, Any], deadline: float
    ) -> p.Reply:
        """A node RPC: the REQ's ack, then the real answer on the PULL."""
        loop = self._running()
        fut: asyncio.Future[Any] = loop.create_future()
        call = Call(fut, str(request.get("work_id", unit)), stream=False, control=True)
        call.rid = rid
        self._calls[rid] = call
        try:
            ack = await self._caller(unit).call(
                p.rpc_call(action, self.reply_url, request), max(0.0, deadline - loop.time())
            )
            if ack != p.ACK:
                raise ack_error(ack, action)
            async with asyncio.timeout_at(deadline):
                reply: p.Reply = await fut
        except TimeoutError:
            raise StackFlowTimeoutError(f"{action} on {unit}: no reply in time") from None
        finally:
            self._calls.pop(rid, None)
        if not reply.ok:
            raise error_for(reply.code, reply.message)
        return reply

    # --- inference --------------------------------------------------------------------

    def infer(
        self,
        work_id: str,
        data: str | Iterable[str],
        *,
        object: str | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[str]:
        """Runs one inference; awaiting the returned future gives the joined output.

        A future rather than a coroutine: `gather` over many calls then costs no task per
        call. Errors (unknown work_id, node gone, queue full) arrive through the future."""
        loop = self._running()
        fut: asyncio.Future[str] = loop.create_future()
        call = Call(fut, work_id, stream=False, control=False)
        deadline = loop.time() + (timeout or self.call_timeout)
        try:
            slot = self._slot(work_id)
            if slot.subscribed.is_set():
                self._request_sender().publish(call, slot, data, object, deadline)
                return fut
        except StackFlowError as exc:
            fut.set_exception(exc)
            return fut
        return asyncio.ensure_future(
            self._infer_when_subscribed(call, slot, data, object, deadline)
        )

    async def _infer_when_subscribed(
        self, call: Call, slot: Slot, data: str | Iterable[str], obj: str | None, deadline: float
    ) -> str:
        await self._subscribed(slot, deadline)
        self._request_sender().publish(call, slot, data, obj, deadline)
        assert call.fut is not None
        result: str = await call.fut
        return result

    async def stream(
        self,
        work_id: str,
        data: str | Iterable[str],
        *,
        object: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[str]:
        """Runs one inference and yields its output deltas until `finish`."""
        loop = self._running()
        deadline = loop.time() + (timeout or self.call_timeout)
        call = Call(None, work_id, stream=True, control=False)
        slot = self._slot(work_id)
        if not slot.subscribed.is_set():
            await self._subscribed(slot, deadline)
        self._request_sender().publish(call, slot, data, object, deadline)
        try:
            while True:
                while call.queue:
                    item = call.queue.popleft()
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
                call.waiter = loop.create_future()
                await call.waiter
                call.waiter = None
        finally:
            self._inflight.finish(call, None)  # also when the consumer stops early

    def _slot(self, work_id: str) -> Slot:
        slot = self._registry.slots.get(self._live(work_id)) if self._registry else None
        if slot is None:
            if work_id in self._setups:
                raise NodeUnavailableError(f"{work_id}: node gone, setting it up again")
            raise UnitNotFoundError(f"{work_id}: not set up by this client")
        return slot

    # --- node loss and re-setup ------------------------------------------------------

    def _on_lost(self, slot: Slot) -> None:
        lost = NodeUnavailableError(f"{slot.work_id}: node went away")
        for call in list(self._calls.values()):
            if call.work_id == slot.work_id and not call.control:
                self._inflight.finish(call, lost)
        record = self._by_live.pop(slot.work_id, None)
        if record is None or not self.resetup or not self._started:
            return
        record.live = None
        if record.resetup is None or record.resetup.done():
            record.resetup = self._running().create_task(self._resetup(record))

    async def _resetup(self, record: SetupRecord) -> None:
        for attempt in itertools.count():
            if not self._started or record.handle not in self._setups:
                return
            try:
                live = await self._setup_once(
                    record.unit, record.request, min(self.setup_timeout, 5.0)
                )
            except StackFlowError as exc:
                log.info("re-setup of %s failed (%s); retrying", record.handle, exc)
                await asyncio.sleep(backoff(attempt, base=0.05, cap=1.0))
                continue
            record.live = live
            self._by_live[live] = record
            log.warning("%s set up again on its node as %s", record.handle, live)
            return

    def available(self, work_id: str) -> bool:
        """True while the work_id's node is subscribed (False during a re-setup)."""
        slot = self._registry.slots.get(self._live(work_id)) if self._registry else None
        return slot is not None and slot.subscribed.is_set()

    async def wait_available(self, work_id: str, timeout: float) -> None:
        """Waits until a work_id is served again (e.g. after a node restart)."""
        async with asyncio.timeout(timeout):
            while not self.available(work_id):
                record = self._setups.get(work_id)
                if record is None:
                    raise UnitNotFoundError(f"{work_id}: not set up by this client")
                if record.resetup is not None and not record.resetup.done():
                    await asyncio.shield(record.resetup)
                else:
                    await asyncio.sleep(0.01)

    # --- helpers --------------------------------------------------------------------

    def _live(self, work_id: str) -> str:
        record = self._setups.get(work_id)
        if record is None:
            return work_id
        return record.live if record.live is not None else work_id

    async def _subscribed(self, slot: Slot, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await slot.subscribed.wait()
        except TimeoutError:
            raise StackFlowTimeoutError(f"{slot.work_id}: node never subscribed") from None

    def _caller(self, unit: str) -> RpcCaller:
        if not self._started or self._ctx is None:
            raise ClientClosedError("client is not started")
        caller = self._callers.get(unit)
        if caller is None:
            url = sockfiles.ipc_url(self.base_dir / f"rpc.{unit}")
            caller = self._callers[unit] = RpcCaller(self._ctx, url)
        return caller

    def _request_sender(self) -> RequestSender:
        if not self._started or self._sender is None:
            raise ClientClosedError("client is not started")
        return self._sender

    def _running(self) -> asyncio.AbstractEventLoop:
        if not self._started or self._loop is None:
            raise ClientClosedError("client is not started")
        return self._loop

    def _new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    @property
    def started(self) -> bool:
        return self._started

    @property
    def work_ids(self) -> Mapping[str, str | None]:
        """Each work_id set up through this client -> the work_id serving it now."""
        return {handle: r.live for handle, r in self._setups.items()}
