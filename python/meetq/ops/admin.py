"""`meetq stats` and `meetq dlq list|requeue|purge`: read and act on queues from a shell."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import orjson

from meetq.ops.common import EXIT_DECLINED, EXIT_USAGE, CliError
from meetq.ops.queues import QueueInspector, QueueSnapshot, StreamSnapshot, dead_letter_dict

_COLUMNS = (
    "queue",
    "critical",
    "high",
    "normal",
    "low",
    "inflight",
    "delayed",
    "dlq",
    "oldest",
    "published",
    "processed",
    "failed",
    "retried",
)


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """A plain text table; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def stats_rows(snaps: Sequence[QueueSnapshot]) -> list[list[str]]:
    rows = [list(_COLUMNS)]
    for s in snaps:
        rows.append(
            [
                s.name,
                *(f"{s.ready[p]:,}" for p in ("critical", "high", "normal", "low")),
                f"{s.inflight:,}",
                f"{s.delayed:,}",
                f"{s.dead_letters:,}",
                f"{s.oldest_ready_age:.1f}s",
                f"{s.published:,}",
                f"{s.processed:,}",
                f"{s.failed:,}",
                f"{s.retried:,}",
            ]
        )
    return rows


def stream_rows(snaps: Sequence[StreamSnapshot]) -> list[list[str]]:
    rows = [["stream", "group", "length", "dlq", "lag", "pending", "consumers"]]
    for s in snaps:
        groups = s.groups or {"-": {"lag": -1, "pending": 0, "consumers": 0}}
        for name, g in sorted(groups.items()):
            lag = f"{g['lag']:,}" if g["lag"] >= 0 else "?"
            rows.append(
                [
                    s.topic,
                    name,
                    f"{s.length:,}",
                    f"{s.dead_letters:,}",
                    lag,
                    f"{g['pending']:,}",
                    str(g["consumers"]),
                ]
            )
    return rows


async def _names(inspector: QueueInspector, queues: Sequence[str]) -> list[str]:
    return list(queues) if queues else await inspector.discover()


async def stats(
    inspector: QueueInspector,
    queues: Sequence[str],
    as_json: bool,
    watch: float | None,
    iterations: int | None,
    out: TextIO = sys.stdout,
    streams: Sequence[str] | None = None,
) -> None:
    """Prints the queues' figures once, or every `watch` seconds (in place on a terminal:
    the cursor goes home and the old frame is cleared, so the figures update where they
    stand)."""
    tty = out.isatty()
    frame = 0
    while True:
        names = await _names(inspector, queues)
        snaps = await inspector.snapshots(names)
        topics = list(streams) if streams is not None else await inspector.discover_streams()
        stream_snaps = [await inspector.stream_snapshot(t) for t in topics]
        if as_json:
            data = {
                "queues": [s.as_dict() for s in snaps],
                "streams": [s.as_dict() for s in stream_snaps],
            }
            text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
        else:
            text = (
                render_table(stats_rows(snaps))
                if snaps
                else "no queues found (name one: meetq stats QUEUE)"
            )
            if stream_snaps:
                text += "\n\n" + render_table(stream_rows(stream_snaps))
        if watch is not None:
            stamp = time.strftime("%H:%M:%S")
            text = f"meetq stats — {stamp}, every {watch:g}s (Ctrl-C to stop)\n\n{text}"
            if tty:
                text = "\x1b[H\x1b[2J" + text
        print(text, file=out, flush=True)
        frame += 1
        if watch is None or (iterations is not None and frame >= iterations):
            return
        await asyncio.sleep(watch)


async def dlq_list(
    inspector: QueueInspector,
    queue: str,
    limit: int,
    offset: int,
    type_filter: str,
    reason_filter: str,
    as_json: bool,
    out: TextIO = sys.stdout,
) -> None:
    page = await inspector.dead_letter_page(queue, offset, limit, type_filter, reason_filter)
    entries = [dead_letter_dict(e) for e in page.entries]
    if as_json:
        data = {"total": page.total, "next_offset": page.next_offset, "entries": entries}
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode(), file=out)
        return
    if not entries:
        print(f"{queue}: no dead letters{' matching' if type_filter or reason_filter else ''}")
        return
    rows = [["id", "type", "priority", "failed at", "deliveries", "reason"]]
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["failed_at"]))
        rows.append(
            [
                e["id"],
                str(e["type"] or "?"),
                str(e["priority"] or "?"),
                when,
                str(e["deliveries"]),
                e["reason"][:80],
            ]
        )
    print(_left_table(rows), file=out)
    more = f"; next page: --offset {page.next_offset}" if page.next_offset is not None else ""
    print(f"{len(entries)} shown of {page.total:,} in the DLQ{more}", file=out)


def _left_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def dlq_requeue(
    inspector: QueueInspector, queue: str, count: int | None, everything: bool
) -> int:
    q = inspector.queue(queue)
    if everything:
        count = await q.dead_letter_count()
        if count == 0:
            print(f"{queue}: the DLQ is empty")
            return 0
    if count is None or count <= 0:
        raise CliError("give --count N (a positive number) or --all", EXIT_USAGE)
    moved = await q.requeue_dead_letters(count)
    print(f"{queue}: requeued {moved} dead letter(s)")
    return moved


async def dlq_purge(inspector: QueueInspector, queue: str, yes: bool) -> int:
    q = inspector.queue(queue)
    n = await q.dead_letter_count()
    if n == 0:
        print(f"{queue}: the DLQ is empty")
        return 0
    if not yes:
        prompt = f"purge {n:,} dead letter(s) from {queue!r}? this cannot be undone [y/N] "
        print(prompt, end="", file=sys.stderr, flush=True)
        answer = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("purge cancelled: nothing removed", EXIT_DECLINED)
    removed = await q.purge_dead_letters()
    print(f"{queue}: purged {removed} dead letter(s)")
    return removed
