"""Server time of the dequeue script, cut after each of its parts, warm and paced; and
what one pickup costs against the least a script can do.

    python benchmarks/bench_script_calls.py [--calls 1000] [--repeats 5]

Loads `return 1`, the scripts' shared prelude, and the dequeue script cut before each of
its parts (acks, the earliest-score reads, the pops, the reply), and calls each on an
empty queue with the queue's 11 keys: back to back, and paced 2 ms apart (500 calls/s, as
a fetcher on an idle queue sees them). Prints `INFO commandstats` usec per EVALSHA, the
median of the repeats. The steps between rows are what each part costs inside Redis.

Then the pickup of one message, paced 2 ms apart, each message stored just before as
`publish` stores it: the whole dequeue; the least an atomic pop + lease + body read can
be in a script (LPOP, ZADD, HGET); `return 1`; and a plain LPOP (the floor's pop, with
no lease). Variants take turns within each repeat, as this box drifts.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from helpers import running_redis
from meetq._redis import scripts as _scripts
from meetq._redis.keys import QueueKeys

ARGS = [250, 30_000, 10, 100_000, 604_800_000, 0]  # n, lease, max deliveries, dlq bounds, acks


def variants() -> dict[str, str]:
    source = _scripts.dequeue.source
    prelude = source.split("\nlocal n, lease_ms")[0]

    def cut(marker: str) -> str:
        assert marker in source, marker
        return source.split(marker)[0] + "\nreturn 1"

    return {
        "return 1": "return 1",
        "prelude only": prelude + "\nreturn 1",
        "+ arguments, TIME": cut("if n_acks > 0 then"),
        "+ earliest scores": cut("\nif next_delayed and"),
        "+ pops (LMPOP)": cut("local out = {acked"),
        "whole dequeue": source,
    }


# The least a pickup script can do: pop an id, lease it, read its body.
MINIMAL_PICKUP = """
local id = redis.call('LPOP', KEYS[3])
if not id then return false end
redis.call('ZADD', KEYS[6], '1', id)
return {id, redis.call('HGET', KEYS[5], id)}
"""
BODY = b"1" + orjson.dumps({"id": "x", "type": "lat", "payload": {"pad": "x" * 60}})


def pickups(r: redis.Redis, keys: list[str], calls: int, repeats: int) -> None:
    """Server usec per pickup of one message, each variant's median over the repeats."""
    shas = {
        "whole dequeue": r.script_load(_scripts.dequeue.source),
        "minimal pickup": r.script_load(MINIMAL_PICKUP),
        "return 1": r.script_load("return 1"),
    }
    ready, msg = keys[2], keys[4]  # ready:1 (NORMAL), msg
    calls_of: dict[str, Callable[[], Any]] = {
        name: functools.partial(r.evalsha, sha, len(keys), *keys, *ARGS)
        for name, sha in shas.items()
    }
    calls_of["LPOP (plain)"] = functools.partial(r.lpop, ready)
    names = list(calls_of)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            r.flushall()
            r.config_resetstat()
            for i in range(calls // 4):
                with r.pipeline(transaction=True) as pipe:
                    pipe.hset(msg, f"m{i}", BODY).rpush(ready, f"m{i}").execute()
                calls_of[name]()
                time.sleep(0.002)  # the pacing under test, not synchronization
            stat = "cmdstat_lpop" if name == "LPOP (plain)" else "cmdstat_evalsha"
            runs[name].append(r.info("commandstats")[stat]["usec_per_call"])
    print(f"usec per pickup of one message, 2 ms apart, median of {repeats} x {calls // 4}")
    for name in names:
        print(f"{name:20} {statistics.median(runs[name]):11.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    keys = QueueKeys("script-calls").all
    with running_redis() as server:
        r = redis.Redis.from_url(server.url)
        try:
            shas = {name: r.script_load(src) for name, src in variants().items()}
            print(f"usec per EVALSHA, empty queue, median of {args.repeats} x {args.calls} calls")
            print(f"{'script':20} {'back to back':>13} {'2 ms apart':>11}")
            for name, sha in shas.items():
                cells = []
                for pause in (0.0, 0.002):
                    runs = []
                    for _ in range(args.repeats):
                        r.config_resetstat()
                        for _ in range(args.calls // (20 if pause else 1)):
                            r.evalsha(sha, len(keys), *keys, *ARGS)
                            if pause:
                                time.sleep(pause)  # the pacing under test, not synchronization
                        runs.append(r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
                    cells.append(statistics.median(runs))
                print(f"{name:20} {cells[0]:13.1f} {cells[1]:11.1f}")
            pickups(r, keys, args.calls, args.repeats)
        finally:
            r.close()


if __name__ == "__main__":
    main()
