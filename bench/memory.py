"""Peak resident memory (VmHWM) of the product's processes, read from /proc."""

from __future__ import annotations

from pathlib import Path

from bench.stats import Row
from devtools.stack import Stack


def status_kb(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(word) for word in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def peak_memory(stack: Stack) -> list[Row]:
    """One row per web and worker process (and the RQ scheduler a worker forks), VmHWM and VmRSS now."""
    rows = []
    for process in stack.by_prefix("web") + stack.by_prefix("worker"):
        assert process.popen is not None
        pids = [(process.name, process.popen.pid)]
        pids += [(f"{process.name} child (RQ scheduler)", child) for child in children(process.popen.pid)]
        for name, pid in pids:
            peak, now = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
            if peak is not None and now is not None:
                rows.append(
                    Row(f"6. peak RSS {name}", f"{peak / 1024:.0f} MB", "", f"pid {pid}; {now / 1024:.0f} MB now")
                )
    return rows
