"""Durations as people write them (`90s`, `30m`, `1h30m`, `2d`) and as we print them."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([smhd])")
_WHOLE = re.compile(r"(?:\d+[smhd])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A bound far beyond any sane grant, so that huge digit strings cannot overflow timedelta.
_MAX_SECONDS = 366 * 86400


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m`-style text; raise ValueError naming the text when it does not parse."""
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"`{text}` is not a duration (use e.g. 90s, 30m, 1h, 1h30m, 2d)")
    seconds = 0
    for number, unit in _PART.findall(text):
        if len(number) > 9:
            raise ValueError(f"`{text}` is too long a duration")
        seconds += int(number) * _UNIT_SECONDS[unit]
    if seconds == 0:
        raise ValueError(f"`{text}` is zero; a duration must be positive")
    if seconds > _MAX_SECONDS:
        raise ValueError(f"`{text}` is longer than a year")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta the way it is typed: `1h30m`, `45s`, `2d`."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
