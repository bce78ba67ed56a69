"""Latency summaries (p50 / p99 / max in ms) and the table the benchmark prints."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Summary:
    """p50, p99 and max of a sample, in milliseconds, with its size."""

    count: int
    p50: float
    p99: float
    max: float

    def text(self) -> str:
        if self.count == 0:
            return "no samples"
        return f"{self.p50:8.1f} / {self.p99:8.1f} / {self.max:8.1f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/PID/stat fields 14 and 15, in clock ticks); 0 once it is
    gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sample."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(samples_ms: Sequence[float]) -> Summary:
    ordered = sorted(samples_ms)
    if not ordered:
        return Summary(0, math.nan, math.nan, math.nan)
    return Summary(len(ordered), percentile(ordered, 0.50), percentile(ordered, 0.99), ordered[-1])


@dataclass(frozen=True)
class Row:
    """One line of the table: a latency summary or a plain figure, the goal, and a note."""

    name: str
    value: str
    goal: str = ""
    note: str = ""
    samples: int | None = None  # for a latency row, how many samples it summarises; 0 fails the run


def latency_row(name: str, samples_ms: Sequence[float], goal: str = "", note: str = "") -> Row:
    summary = summarize(samples_ms)
    return Row(name, f"{summary.text()}  (n={summary.count})", goal, note, summary.count)


def empty_rows(rows: Sequence[Row]) -> list[str]:
    """The names of the latency rows that summarise nothing: a figure that measured nothing must not pass quietly."""
    return [row.name.strip() for row in rows if row.samples == 0]


def render(title: str, rows: Sequence[Row]) -> str:
    """The rows as an aligned text table under `title`."""
    header = Row("figure", "p50 / p99 / max ms, or value", "goal", "note")
    widths = [max(len(getattr(row, key)) for row in [header, *rows]) for key in ("name", "value", "goal")]
    lines = [title, ""]
    for index, row in enumerate([header, *rows]):
        cells = [row.name.ljust(widths[0]), row.value.ljust(widths[1]), row.goal.ljust(widths[2]), row.note]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in [*widths, 4]))
    return "\n".join(lines)
