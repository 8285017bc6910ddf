"""Server time of the dequeue script, cut after each of its parts, warm and paced.

    python benchmarks/bench_script_calls.py [--calls 1000] [--repeats 5]

Loads `return 1`, the scripts' shared prelude, and the dequeue script cut before each of
its parts (acks, the earliest-score reads, the pops, the reply), and calls each on an
empty queue with the queue's 11 keys: back to back, and paced 2 ms apart (500 calls/s, as
a fetcher on an idle queue sees them). Prints `INFO commandstats` usec per EVALSHA, the
median of the repeats. The steps between rows are what each part costs inside Redis.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import running_redis
from meetq import _scripts
from meetq._keys import QueueKeys

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
        finally:
            r.close()


if __name__ == "__main__":
    main()
