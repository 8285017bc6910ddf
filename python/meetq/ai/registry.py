"""The unit-manager's book-keeping: rpc.sys, the port pool and one XPUB per work_id.

Nodes call rpc.sys (REP) to register a work_id (`register_unit`), release it
(`release_unit`) and use a small key/value store (`sql_*`). For each registered work_id
the registry binds an XPUB on its inference_url and tracks the node's subscription: the
XPUB reports `\\x01` when the node's SUB connects and `\\x00` when its last subscriber is
gone, which is how a node that died is noticed without waiting for a timeout.

Instance numbers grow monotonically per unit for the registry's life, so the work_id a
caller holds is never reused for another setup.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from meetq.ai import protocol as p
from meetq.ai import sockfiles
from meetq.ai.errors import ProtocolError, StackFlowError
from meetq.ai.reactor import NOBLOCK, Reader, configure, send_frame
from meetq.ai.rpc import RpcServer

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Slot:
    """One registered work_id as the manager sees it."""

    work_id: str
    unit: str
    port: int
    output_url: str
    inference_url: str
    reader: Reader
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    released: bool = False
    exiting: bool = False

    def publish(self, frame: bytes) -> None:
        """Queues one inference request; NODROP makes a full queue an error, not a loss."""
        send_frame(self.reader.sock, frame, NOBLOCK)


class Registry:
    """rpc.sys and the per-work_id sockets of one base directory."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        base_dir: Path,
        on_lost: Callable[[Slot], None],
        *,
        hwm: int = 100_000,
    ) -> None:
        self._hwm = hwm
        self._ctx = ctx
        self.base_dir = base_dir
        self._on_lost = on_lost
        self.slots: dict[str, Slot] = {}
        self.store: dict[str, str] = {}
        self._next_instance: dict[str, int] = {}
        self._free_ports = list(range(p.PORT_FIRST, p.PORT_LAST, 2))
        self._free_ports.reverse()  # pop() hands out the lowest first
        self._server = RpcServer(ctx, base_dir / "rpc.sys", self._handle)

    @property
    def url(self) -> str:
        return self._server.url

    # --- rpc.sys ----------------------------------------------------------------

    def _handle(self, frames: list[bytes]) -> bytes:
        if len(frames) != 2:
            return p.NOT_ACTION
        action, payload = frames[0].decode(errors="replace"), frames[1]
        if action == p.REGISTER_UNIT:
            return self._register(payload.decode(errors="replace"))
        if action == p.RELEASE_UNIT:
            return p.SUCCESS if self.release(payload.decode(errors="replace")) else p.FALSE
        if action == p.SQL_SELECT:
            return self.store.get(payload.decode(errors="replace"), "").encode()
        if action == p.SQL_SET:
            try:
                obj = p.loads(payload)
                key, val = obj["key"], obj["val"]
            except (ProtocolError, KeyError, TypeError):
                return p.FALSE
            self.store[str(key)] = val if isinstance(val, str) else p.dumps(val).decode()
            return p.SUCCESS
        if action == p.SQL_UNSET:
            self.store.pop(payload.decode(errors="replace"), None)
            return p.SUCCESS
        if action == p.LIST_ACTION:
            return p.list_action_reply(p.SYS_ACTIONS)
        return p.NOT_ACTION

    def _register(self, unit: str) -> bytes:
        if not unit or not self._free_ports:
            log.error("register_unit refused for %r (free ports: %d)", unit, len(self._free_ports))
            return p.FALSE
        n = self._next_instance.get(unit, 0)
        self._next_instance[unit] = n + 1
        port = self._free_ports.pop()
        llm = self.base_dir / "llm"
        output_url = sockfiles.ipc_url(llm / f"{port}.sock.{unit}.output_url")
        inf_path = llm / f"{port + 1}.sock.{unit}.inference_url"
        try:
            sockfiles.claim(inf_path)
            sock = configure(self._ctx.socket(zmq.XPUB), hwm=self._hwm)
            sock.setsockopt(zmq.XPUB_NODROP, 1)
            inference_url = sockfiles.ipc_url(inf_path)
            sock.bind(inference_url)
        except (StackFlowError, zmq.ZMQError) as exc:
            log.error("register_unit %s: cannot bind %s: %s", unit, inf_path, exc)
            self._free_ports.append(port)
            return p.FALSE
        work_id = f"{unit}.{n}"
        slot = Slot(work_id, unit, port, output_url, inference_url, None)  # type: ignore[arg-type]
        slot.reader = Reader(sock, functools.partial(self._on_subscription, slot))
        self.slots[work_id] = slot
        self.store[f"{work_id}.out_port"] = output_url
        log.debug("registered %s (ports %d, %d)", work_id, port, port + 1)
        return p.register_reply(n, output_url, inference_url)

    def _on_subscription(self, slot: Slot, msg: bytes) -> None:
        if msg[:1] == b"\x01":
            slot.subscribed.set()
        elif msg[:1] == b"\x00" and slot.subscribed.is_set():
            slot.subscribed.clear()
            if not slot.released and not slot.exiting:
                log.warning("node of %s went away (subscription closed)", slot.work_id)
                self.release(slot.work_id)
                self._on_lost(slot)

    def release(self, work_id: str) -> bool:
        """Frees a work_id's ports and XPUB (node's release_unit, exit, or a lost node)."""
        slot = self.slots.pop(work_id, None)
        if slot is None:
            return False
        slot.released = True
        slot.reader.close()
        sockfiles.remove(sockfiles.url_path(slot.inference_url))
        self._free_ports.append(slot.port)
        self.store.pop(f"{work_id}.out_port", None)
        return True

    def close(self) -> None:
        for work_id in list(self.slots):
            self.release(work_id)
        self._server.close()
