"""Turns a pytest-benchmark JSON file into the ratio tables of BENCHMARKS.md.

    pytest benchmarks --benchmark-only --benchmark-json=bench.json
    python benchmarks/report.py bench.json

Within each group the first `*native*` entry is the reference: "times slower than meetq" is
each contender's median time over the reference's, both measured in the same run.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def rate(bench: dict[str, Any]) -> str:
    extra = bench.get("extra_info", {})
    for key in ("events_per_s", "ops_per_s", "msgs_per_s", "tasks_per_s"):
        if key in extra:
            return f"{extra[key]:,.0f} {key.removesuffix('_per_s')}/s"
    return ""


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    groups: dict[str, list[dict[str, Any]]] = {}
    for bench in data["benchmarks"]:
        groups.setdefault(bench.get("group") or "ungrouped", []).append(bench)
    print(
        f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
        f"python {data['machine_info'].get('python_version')}\n"
    )
    for group, benches in groups.items():
        benches.sort(key=lambda b: b["stats"]["median"])
        ref = next((b for b in benches if "native" in b["name"]), benches[0])
        ref_median = ref["stats"]["median"]
        print(f"### {group}\n")
        print("| contender | median | rate | times slower than meetq native |")
        print("|---|---|---|---|")
        for b in benches:
            m = b["stats"]["median"]
            name = b["name"].removeprefix("test_")
            print(f"| {name} | {m * 1e3:,.1f} ms | {rate(b)} | {m / ref_median:.2f} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
