"""Scheduled windows (`--at`): when a request's grant starts, read once where the request enters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from jit_lb.access.durations import format_duration
from jit_lb.access.errors import CommandError

_CLOCK = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
GRAMMAR = "ISO 8601 with a zone (`2026-12-24T02:00Z`) or `HH:MM` (UTC, the next such time)"


def parse_start(text: str, now: datetime, ahead: timedelta) -> datetime:
    """The start `text` names: ISO 8601 with a zone, or `HH:MM` in UTC (the next such time after `now`).

    Raise CommandError naming what is wrong: not a time, no zone, in the past, or further than `ahead`.
    """
    word = text.strip()
    clock = _CLOCK.match(word)
    if clock:
        start = now.astimezone(UTC).replace(hour=int(clock[1]), minute=int(clock[2]), second=0, microsecond=0)
        if start <= now:
            start += timedelta(days=1)
    else:
        try:
            start = datetime.fromisoformat(word.replace("z", "Z"))
        except ValueError:
            raise CommandError(f"`--at {word[:40]}` is not a time: give {GRAMMAR}") from None
        if start.tzinfo is None:
            raise CommandError(f"`--at {word[:40]}` names no time zone: add one (`Z` for UTC), or give `HH:MM` (UTC)")
        start = start.astimezone(UTC)
    if start <= now:
        raise CommandError(f"`--at {word[:40]}` is in the past ({start:%Y-%m-%d %H:%M:%S} UTC); a window starts later")
    if start - now > ahead:
        raise CommandError(
            f"`--at {word[:40]}` is more than {format_duration(ahead)} ahead (`limits.schedule_ahead`); "
            "ask nearer the time"
        )
    return start
