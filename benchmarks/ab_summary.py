"""Summarizes an `ab_trees.sh` output directory: per pair, old and new side by side, and
the new/old ratio of each figure computed within the pair (the two runs of a pair are
adjacent in time, so the machine's drift mostly cancels), then the median over the pairs.

    python benchmarks/ab_summary.py benchmarks/results/<dir>
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def self_figures(path: Path) -> dict[str, float]:
    d = json.loads(path.read_text())
    out: dict[str, float] = {}
    for run in d["drain"]:
        out[f"drain {run['handler']} jobs/s"] = run["drain_jobs_per_s"]
        out[f"drain {run['handler']} worker CPU us/job"] = run["worker_cpu_us_per_job"]
    for key, label in (("latency", "meetq"), ("raw_latency", "floor")):
        for rate in (500.0, 10_000.0):
            runs = [r for r in d[key] if r["rate"] == rate]
            out[f"{label} p50 ms at {rate:,.0f}/s"] = median([r["p50_ms"] for r in runs])
            out[f"{label} p99 ms at {rate:,.0f}/s"] = median([r["p99_ms"] for r in runs])
    for stat in ("p50", "p99"):
        key = f"{stat} ms at 500/s"
        out[f"meetq/floor {stat} at 500/s"] = out[f"meetq {key}"] / out[f"floor {key}"]
    out["load average (1 min, before)"] = d["loadavg"][0][0]
    return out


_TOTAL = re.compile(r"^(meetq|raw)\s.*total ([\d.]+)/([\d.]+)/([\d.]+)")
_CPU = re.compile(r"worker (\d+), publisher (\d+), redis-server (\d+)")


def breakdown_figures(path: Path) -> dict[str, float]:
    rows: dict[str, list[list[float]]] = {"meetq": [], "raw": []}
    cpu: dict[str, list[list[float]]] = {"meetq": [], "raw": []}
    who = ""
    for line in path.read_text().splitlines():
        m = _TOTAL.match(line)
        if m:
            who = m.group(1)
            rows[who].append([float(m.group(i)) for i in (2, 3, 4)])
            continue
        c = _CPU.search(line)
        if c and who:
            cpu[who].append([float(c.group(i)) for i in (1, 2, 3)])
    out: dict[str, float] = {}
    for who, label in (("meetq", "meetq"), ("raw", "floor")):
        if rows[who]:
            out[f"breakdown {label} p50 ms"] = median([r[0] for r in rows[who]])
            out[f"breakdown {label} p99 ms"] = median([r[2] for r in rows[who]])
        if cpu[who]:
            out[f"breakdown {label} worker CPU us/msg"] = median([r[0] for r in cpu[who]])
            out[f"breakdown {label} publisher CPU us/msg"] = median([r[1] for r in cpu[who]])
    if rows["meetq"] and rows["raw"]:
        for i, stat in ((0, "p50"), (2, "p99")):
            ratios = [m[i] / r[i] for m, r in zip(rows["meetq"], rows["raw"], strict=False) if r[i]]
            out[f"breakdown meetq/floor {stat}"] = median(ratios)
    return out


def pytest_figures(path: Path) -> dict[str, float]:
    d = json.loads(path.read_text())
    out = {}
    for b in d["benchmarks"]:
        out[f"{b['name']} median s"] = b["stats"]["median"]
    return out


_DELIVER = re.compile(r"deliver: ([\d.]+) us/msg CPU \(min ([\d.]+)\)")
_DRAIN = re.compile(r"drain: ([\d. ]+) us/job CPU")


def cpu_figures(path: Path) -> dict[str, float]:
    text = path.read_text()
    out: dict[str, float] = {}
    d = _DELIVER.search(text)
    if d:
        out["deliver CPU us/msg (median)"] = float(d.group(1))
        out["deliver CPU us/msg (min)"] = float(d.group(2))
    m = _DRAIN.search(text)
    if m:
        out["drain CPU us/job (median of rounds)"] = median([float(x) for x in m.group(1).split()])
    return out


def figures(directory: Path, label: str, pair: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, read in (
        (f"bench_queue_self-{label}-{pair}.json", self_figures),
        (f"latency_breakdown-{label}-{pair}.txt", breakdown_figures),
        (f"test_bench_queue-{label}-{pair}.json", pytest_figures),
        (f"ab_cpu-{label}-{pair}.txt", cpu_figures),
    ):
        path = directory / name
        if path.exists():
            try:
                out.update(read(path))
            except (KeyError, ValueError) as exc:
                print(f"# {name}: unreadable ({exc!r})")
    return out


def main() -> None:
    directory = Path(sys.argv[1])
    pairs = sorted(
        {
            int(p.stem.rsplit("-", 1)[1])
            for pattern in ("test_bench_queue-new-*.json", "ab_cpu-new-*.txt")
            for p in directory.glob(pattern)
        }
    )
    table: dict[str, list[tuple[float, float]]] = {}
    for pair in pairs:
        old, new = figures(directory, "old", pair), figures(directory, "new", pair)
        for key in new:
            if key in old:
                table.setdefault(key, []).append((old[key], new[key]))
    print(f"pairs: {pairs}")
    heads = " | ".join(f"pair {p}: old -> new" for p in pairs)
    print(f"{'figure':44} | {heads} | median new/old")
    for key, values in table.items():
        cells = " | ".join(f"{o:,.2f} -> {n:,.2f}" for o, n in values)
        ratio = median([n / o for o, n in values if o])
        print(f"{key:44} | {cells} | {ratio:.2f}")


if __name__ == "__main__":
    main()
