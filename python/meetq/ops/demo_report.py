"""What the demo counts while it runs, and how it shows it (live progress, summary)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

PRIORITIES = ("critical", "high", "normal", "low")


@dataclass
class Tally:
    """Counters of one demo run (everything happens on one event loop: no locks)."""

    started: float = field(default_factory=time.monotonic)
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    completed: Counter[tuple[str, str]] = field(default_factory=Counter)
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    """Final error frames / outcomes the clients saw, by text."""
    events: Counter[str] = field(default_factory=Counter)
    scheduled_run: int = 0
    voice: list[tuple[str, str]] = field(default_factory=list)
    """(phrase spoken, text the ASR node recognised) per voice command"""
    sentiment: dict[str, tuple[str, float]] = field(default_factory=dict)
    """chat line -> (VADER's label, compound score)"""
    ai_infer: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """client type -> the AIService's node round trips (model time included), seconds"""
    notes: list[str] = field(default_factory=list)
    load_ended: float | None = None

    def record_ai(self, kind: str, said: str | None, result: dict[str, Any]) -> None:
        """What an AI task's result says: the recognised text, the sentiment, the timing."""
        if kind == "ai.speech_recognition" and said is not None:
            self.voice.append((said, str(result.get("text"))))
        scores = result.get("scores")
        if kind == "ai.emotion_detection" and said is not None and isinstance(scores, dict):
            self.sentiment[said] = (str(result.get("label")), float(scores.get("compound", 0.0)))
        timing = result.get("timing")
        if isinstance(timing, dict) and isinstance(timing.get("infer_s"), int | float):
            self.ai_infer[kind].append(float(timing["infer_s"]))

    def sent_total(self) -> int:
        return sum(self.sent.values())

    def finished_total(self) -> int:
        return sum(self.completed.values()) + sum(self.failed.values())

    def elapsed(self) -> float:
        return (self.load_ended or time.monotonic()) - self.started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def progress_view(t: Tally, duration: float, depths: dict[str, int], phase: str) -> Group:
    elapsed = time.monotonic() - t.started
    head = Text.assemble(
        ("meetq demo ", "bold"),
        f"{phase} {min(elapsed, duration):4.1f}/{duration:g}s  ",
        ("sent ", "dim"),
        f"{t.sent_total():,}  ",
        ("done ", "dim"),
        f"{sum(t.completed.values()):,}  ",
        ("failed ", "dim"),
        f"{sum(t.failed.values()):,}  ",
        ("refused ", "dim"),
        f"{sum(t.refused.values()):,}  ",
        ("p99 ", "dim"),
        f"{percentile(t.latencies[-2000:], 0.99) * 1000:.1f} ms",
    )
    table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
    table.add_column("queue")
    table.add_column("waiting", justify="right")
    for name, n in sorted(depths.items()):
        table.add_row(name, f"{n:,}")
    events = Text("events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(t.events.items())))
    return Group(head, table, events)


def summary_tables(t: Tally, extra: dict[str, Any]) -> list[Table]:
    by_type = Table(title="tasks by type and priority", title_justify="left")
    by_type.add_column("type")
    for p in PRIORITIES:
        by_type.add_column(p, justify="right")
    by_type.add_column("completed", justify="right")
    by_type.add_column("failed", justify="right")
    types = sorted({k[0] for k, n in t.sent.items() if n > 0})
    for typ in types:
        by_type.add_row(
            typ,
            *(f"{t.sent[(typ, p)]:,}" for p in PRIORITIES),
            f"{sum(v for k, v in t.completed.items() if k[0] == typ):,}",
            f"{sum(v for k, v in t.failed.items() if k[0] == typ):,}",
        )
    for typ, n in sorted(t.refused.items()):
        by_type.add_row(f"[red]{typ}[/] (refused)", "", "", "", "", "", f"{n:,}")

    figures = Table(title="summary", title_justify="left", show_header=False)
    figures.add_column("what")
    figures.add_column("value", justify="right")
    elapsed = t.elapsed()
    figures.add_row("tasks sent", f"{t.sent_total():,} in {elapsed:.1f}s")
    figures.add_row("achieved rate", f"{t.sent_total() / elapsed:,.0f} tasks/s" if elapsed else "-")
    figures.add_row("completed", f"{sum(t.completed.values()):,}")
    p50, p99 = (percentile(t.latencies, q) * 1000 for q in (0.5, 0.99))
    figures.add_row("latency end to end p50 / p99", f"{p50:.1f} / {p99:.1f} ms")
    for key, value in extra.items():
        figures.add_row(key, value)
    figures.add_row("DLQ", f"{sum(t.dlq_reasons.values()):,}")
    for reason, n in t.dlq_reasons.most_common(6):
        figures.add_row(f"  reason: {reason[:110]}", f"{n:,}")
    for text, n in group_reasons(list(t.errors.elements())).most_common(5):
        figures.add_row(f"  client saw: {text[:110]}", f"{n:,}")
    for name, n in sorted(t.events.items()):
        if name.startswith("bus "):  # pub/sub and stream counts are in `extra`
            figures.add_row(f"events: {name}", f"{n:,}")
    figures.add_row("scheduled tasks run", f"{t.scheduled_run:,}")
    tables = [by_type, figures]
    for kind, values in sorted(t.ai_infer.items()):
        p50, p99 = (percentile(values, q) * 1000 for q in (0.5, 0.99))
        figures.add_row(f"AI node p50 / p99: {kind}", f"{p50:.1f} / {p99:.1f} ms")
    if t.voice:
        voice = Table(title="voice commands (espeak-ng -> PocketSphinx)", title_justify="left")
        voice.add_column("said")
        voice.add_column("recognised as")
        voice.add_column("times", justify="right")
        for (said, heard), n in sorted(Counter(t.voice).items()):
            voice.add_row(said, heard or "(nothing)", f"{n:,}")
        tables.append(voice)
    if t.sentiment:
        mood = Table(title="chat sentiment (VADER)", title_justify="left")
        mood.add_column("text")
        mood.add_column("label")
        mood.add_column("compound", justify="right")
        for text, (label, compound) in sorted(t.sentiment.items()):
            mood.add_row(text, label, f"{compound:+.3f}")
        tables.append(mood)
    return tables


def group_reasons(reasons: list[str]) -> Counter[str]:
    """DLQ reasons with ids and numbers folded (words at least half digits), so alike
    failures count together and words such as `base64` stay."""
    out: Counter[str] = Counter()
    for r in reasons:
        out[" ".join(w for w in r.split() if 2 * sum(c.isdigit() for c in w) < len(w))] += 1
    return out


def by_priority(counter: Counter[tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for (_, p), n in counter.items():
        out[p] += n
    return dict(out)
