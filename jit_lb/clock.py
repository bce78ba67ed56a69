"""The one clock of jit-lb: the time now, timezone-aware UTC (RQ reads naive datetimes as local time).

Code that judges time takes `now` as a parameter; this is what the processes pass it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

CLOCK_SKEW = timedelta(seconds=60)  # another host's clock may run this far ahead: its marker is not a forgery


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)
