"""StackFlowNode: meetq's reference StackFlow node, indistinguishable to a client.

It binds REP `rpc.<unit>` (setup / exit / pause / taskinfo / list_action, each acked with
`"None"` at once, the answer pushed to the caller's reply URL), registers each setup with
the manager's `rpc.sys`, binds a PUB on the work_id's output_url (a mirror of every reply)
and SUBscribes to its inference_url. Unlike the C++ node it answers every error with the
protocol's error object instead of going silent, runs CPU-bound models in a thread pool,
and sends with NOBLOCK and LINGER 0, so a vanished manager never wedges it.

The per-work_id inference path (input chunks, model run, replies) is `meetq.ai.work`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zmq

from meetq.ai import protocol as p
from meetq.ai import sockfiles
from meetq.ai.errors import ModelLoadError, ProtocolError, StackFlowError
from meetq.ai.models import ModelFn, ModelSpec, builtin
from meetq.ai.models.base import fixed
from meetq.ai.rpc import RpcCaller, RpcServer
from meetq.ai.work import Replier, Work

log = logging.getLogger(__name__)

ModelArg = ModelFn | ModelSpec | Mapping[str, ModelFn | ModelSpec]


class StackFlowNode:
    """Serves `model` as unit `unit` under `base_dir` (default `/tmp`).

    `model` is a model function (`fn(str) -> str`, or an (async) iterator of chunks), a
    `ModelSpec`, or a mapping model name -> either; a single model serves every model
    name a setup asks for, a mapping only its own names (others: model load failed).
    """

    def __init__(
        self,
        unit: str,
        model: ModelArg,
        base_dir: str | os.PathLike[str] = "/tmp",
        *,
        in_thread: bool = False,
        max_tasks: int = 10_000,
        rpc_timeout: float = 5.0,
        threads: int = 2,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if not unit or "." in unit or "/" in unit:
            raise ValueError(f"invalid unit name {unit!r}")
        self.unit = unit
        self.base_dir = Path(base_dir)
        self.max_tasks = max_tasks
        self.rpc_timeout = rpc_timeout
        self._models: dict[str, ModelSpec] | None
        self._default: ModelSpec | None = None
        if isinstance(model, Mapping):
            self._models = {name: _spec(m, in_thread) for name, m in model.items()}
        else:
            self._models = None
            self._default = _spec(model, in_thread)
        self._threads = threads
        self._own_ctx = context is None
        self._ctx = context
        self._server: RpcServer | None = None
        self._sys: RpcCaller | None = None
        self._replier: Replier | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.works: dict[str, Work] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        if self._ctx is None:
            self._ctx = zmq.Context()
        try:
            self._server = RpcServer(self._ctx, self.base_dir / f"rpc.{self.unit}", self._on_rpc)
        except BaseException:
            if self._own_ctx:  # nothing half-started stays behind
                self._ctx.destroy(linger=0)
                self._ctx = None
            raise
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix=f"node-{self.unit}")
        self._replier = Replier(self._ctx)
        self._sys = RpcCaller(self._ctx, sockfiles.ipc_url(self.base_dir / "rpc.sys"))
        self._started = True

    async def stop(self) -> None:
        """Ends every work_id (release_unit best effort), closes sockets, removes files."""
        if not self._started:
            return
        self._started = False
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for work_id in list(self.works):
            await self._close_work(work_id, release_timeout=min(self.rpc_timeout, 0.5))
        if self._sys is not None:
            self._sys.close()
        if self._replier is not None:
            self._replier.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._own_ctx and self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None

    async def __aenter__(self) -> StackFlowNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- rpc.<unit> -------------------------------------------------------------------

    def _on_rpc(self, frames: list[bytes]) -> bytes:
        if len(frames) != 2:
            return p.NOT_ACTION
        action = frames[0].decode(errors="replace")
        if action == p.LIST_ACTION:
            return p.list_action_reply(p.NODE_ACTIONS)
        if action not in p.NODE_ACTIONS:
            return p.NOT_ACTION
        try:
            url_bytes, raw = p.unlp(frames[1])
            reply_url = url_bytes.decode()
        except (ProtocolError, UnicodeDecodeError) as exc:
            return p.error_frame("", self.unit, p.JSON_FORMAT_ERROR, f"bad rpc payload: {exc}")
        self._spawn(self._handle(action, reply_url, raw))
        return p.ACK

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, action: str, reply_url: str, raw: bytes) -> None:
        assert self._replier is not None
        try:
            request = p.loads(raw)
            if not isinstance(request, dict):
                raise ProtocolError("request is not a JSON object")
        except ProtocolError as exc:
            self._replier.send(reply_url, p.error_frame("", self.unit, exc.code, exc.message))
            return
        rid = str(request.get("request_id", ""))
        work_id = str(request.get("work_id", ""))
        try:
            if action == p.SETUP:
                await self._setup(reply_url, rid, request)
            elif action == p.EXIT:
                await self._exit(reply_url, rid, work_id)
            elif action == p.TASKINFO:
                self._taskinfo(reply_url, rid, work_id)
            else:  # pause: accepted, nothing to pause in a request/response model
                self._work(work_id)
                self._replier.send(reply_url, p.reply_frame(rid, work_id))
        except StackFlowError as exc:
            self._replier.send(reply_url, p.error_frame(rid, work_id, exc.code, exc.message))
        except Exception as exc:
            log.exception("%s %s failed", action, work_id)
            self._replier.send(
                reply_url, p.error_frame(rid, work_id, p.UNIT_CALL_FAILED, f"{action}: {exc}")
            )

    def _work(self, work_id: str) -> Work:
        work = self.works.get(work_id)
        if work is None:
            raise StackFlowError(f"unit does not exist: {work_id}", p.UNIT_NOT_FOUND)
        return work

    async def _setup(self, reply_url: str, rid: str, request: dict[str, Any]) -> None:
        assert self._sys is not None and self._replier is not None and self._ctx is not None
        data = request.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            raise StackFlowError("setup data must be an object with a model", -2)
        spec = self._spec_for(data["model"])
        loop = asyncio.get_running_loop()
        try:
            if spec.blocking:
                fn = await loop.run_in_executor(self._executor, spec.load, data)
            else:
                fn = spec.load(data)
        except Exception as exc:
            code = exc.code if isinstance(exc, StackFlowError) else p.MODEL_LOAD_FAILED
            raise StackFlowError(f"model load failed: {exc}", code) from exc
        try:
            answer = await self._sys.call(
                [p.REGISTER_UNIT.encode(), self.unit.encode()], self.rpc_timeout
            )
            n, output_url, inference_url = p.parse_register_reply(answer)
        except StackFlowError as exc:
            raise StackFlowError(f"register_unit failed: {exc}", p.UNIT_CALL_FAILED) from exc
        work_id = f"{self.unit}.{n}"
        try:
            work = Work(
                self._ctx,
                work_id,
                data,
                fn,
                spec.blocking,
                reply_url=reply_url,
                output_url=output_url,
                inference_url=inference_url,
                replier=self._replier,
                executor=self._executor,
                max_tasks=self.max_tasks,
            )
        except (StackFlowError, zmq.ZMQError) as exc:
            await self._release(work_id, self.rpc_timeout)
            raise StackFlowError(f"cannot open {work_id}'s sockets: {exc}", -9) from exc
        self.works[work_id] = work
        log.info("set up %s (model %s)", work_id, data["model"])
        self._replier.send(reply_url, p.reply_frame(rid, work_id))

    def _spec_for(self, name: str) -> ModelSpec:
        if self._models is None:
            assert self._default is not None
            return self._default
        spec = self._models.get(name)
        if spec is None:
            raise ModelLoadError(f"model load failed: no model {name!r} on this node")
        return spec

    async def _exit(self, reply_url: str, rid: str, work_id: str) -> None:
        assert self._replier is not None
        self._work(work_id)
        self._replier.send(reply_url, p.reply_frame(rid, work_id))
        await self._close_work(work_id, release_timeout=self.rpc_timeout)

    async def _close_work(self, work_id: str, release_timeout: float) -> None:
        work = self.works.pop(work_id, None)
        if work is not None:
            work.close()
            await self._release(work_id, release_timeout)

    async def _release(self, work_id: str, timeout: float) -> None:
        if self._sys is None:
            return
        try:
            await self._sys.call([p.RELEASE_UNIT.encode(), work_id.encode()], timeout)
        except StackFlowError as exc:
            log.info("release_unit %s: %s", work_id, exc)

    def _taskinfo(self, reply_url: str, rid: str, work_id: str) -> None:
        assert self._replier is not None
        if work_id == self.unit:
            data: Any = sorted(self.works)
            obj = f"{self.unit}.tasklist"
        else:
            data = dict(self._work(work_id).setup)
            obj = f"{self.unit}.taskinfo"
        self._replier.send(reply_url, p.reply_frame(rid, work_id, data, obj=obj))


def _spec(model: ModelFn | ModelSpec, in_thread: bool) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else fixed(model, blocking=in_thread)


# --- `meetq ai-node` ------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meetq ai-node", description=__doc__.split("\n")[0])
    parser.add_argument("--unit", default="llm")
    parser.add_argument("--model", default="echo", help="echo | latency | asr | sentiment")
    parser.add_argument("--base-dir", default="/tmp")
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--chunks", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    """Runs one node until `stop` is set (or SIGINT/SIGTERM)."""
    spec = builtin(args.model, latency_ms=args.latency_ms, chunks=args.chunks)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with StackFlowNode(args.unit, spec, args.base_dir, threads=args.threads):
        log.info("ai-node %s (%s) serving under %s", args.unit, args.model, args.base_dir)
        print(f"ready {args.unit} {args.model} {args.base_dir}", flush=True)
        await stop.wait()


def run_node_from_args(argv: Sequence[str] | None = None) -> int:
    """Entry point of `meetq ai-node --unit llm --model echo --base-dir DIR`."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        import uvloop

        uvloop.run(serve(args))
    except ValueError as exc:  # unknown model name
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(run_node_from_args())
