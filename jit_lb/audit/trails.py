"""`audit who` and `audit report`: what the log says of each request, gathered record by record as the files stream.

Every request record carries the request's fields (requester, target, reason, source, approvers, status),
so a request's trail can be read from any of its records; the events say when access began
(`grant.applied`; a break-glass is `grant.breakglass` first), moved (`grant.extended`) and ended
(`grant.revoked`), or why there was none (`request.denied`, `request.expired`, `request.cancelled`,
`grant.failed`).
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jit_lb.access.durations import format_duration
from jit_lb.audit.files import Line

CLOSING = frozenset({"grant.revoked", "request.denied", "request.expired", "request.cancelled", "grant.failed"})
# Records a `who` trail begins at: the grant, a break-glass (applied next), or a revoke (its apply in an older file).
BEGINS = frozenset({"grant.applied", "grant.breakglass", "grant.revoked"})
# A report's columns, in order: the CSV header and each JSON line's keys.
COLUMNS = (
    "request_id",
    "requester",
    "target",
    "reason",
    "source",
    "approvers",
    "requested_at",
    "granted_at",
    "ends_at",
    "ended_at",
    "lasted",
    "lasted_seconds",
    "outcome",
    "end_reason",
    "ended_by",
    "mfa",
    "break_glass",
    "changes",
)
# A closed request's row waits this long (in log time) for late records of it, e.g. the session's grant.activity.
LINGER = timedelta(hours=1)
# A given row's id is remembered this long (in log time), so that a later record of it makes no second row.
REMEMBER = timedelta(days=1)


def parse_instant(text: str) -> datetime:
    """ISO 8601 (`2026-11-23T21:00:00Z`, an offset, or a date); without a zone, UTC. Raises ValueError."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None


@dataclass
class Trail:
    """One request as its records tell it: of a request of several targets, one target (its `part`)."""

    request_id: str
    part: str | None = None  # the stored id of one target of a request of several (docs/auditors.md)
    target: str | None = None
    requester: str | None = None
    reason: str | None = None
    source: str | None = None
    approvers: list[str] = field(default_factory=list)
    requested_at: datetime | None = None
    granted_at: datetime | None = None
    ends_at: datetime | None = None  # the approved end, moved by each extension
    ended_at: datetime | None = None
    lasted_seconds: int | None = None
    outcome: str | None = None  # the request's last status
    end_reason: str | None = None
    ended_by: str | None = None
    closed_at: datetime | None = None  # when the closing record was written
    mfa: bool = False
    break_glass: bool = False
    revoke_failed: bool = False
    changes: list[Any] | None = None  # from grant.activity; None: the log says nothing of the session

    def add(self, record: dict[str, Any], at: datetime | None) -> None:
        """Fold one record in (records arrive in the order written)."""
        event = str(record.get("event"))
        self.target = _text(record.get("target")) or self.target
        self.requester = _text(record.get("requester")) or self.requester
        self.reason = _text(record.get("request_reason")) or self.reason
        self.source = _text(record.get("source_cidr")) or _text(record.get("role_name")) or self.source
        if isinstance(record.get("approvers"), list):
            self.approvers = [str(approver) for approver in record["approvers"]]
        self.outcome = _text(record.get("status")) or self.outcome
        if self.requested_at is None or event == "request.created":
            self.requested_at = at
        self.break_glass = self.break_glass or event == "grant.breakglass" or record.get("break_glass") is True
        if event == "grant.applied":
            self.granted_at = _instant(record.get("granted_at")) or at
            self.ends_at = _instant(record.get("ends_at")) or self.ends_at
        elif event == "grant.extended":
            self.ends_at = _instant(record.get("ends_at")) or self.ends_at
        elif event == "grant.revoke_failed":
            self.revoke_failed = True
        elif event == "grant.activity" and isinstance(record.get("changes"), list):
            self.changes = [*(self.changes or []), *record["changes"]]
        if event in CLOSING:
            self._close(event, record, at)
        if record.get("mfa") is True or record.get("with_mfa") is True or event == "mfa.verified":
            self.mfa = True

    def _close(self, event: str, record: dict[str, Any], at: datetime | None) -> None:
        self.closed_at = at
        self.ended_by = _text(record.get("actor"))
        if event == "grant.revoked":
            self.granted_at = _instant(record.get("granted_at")) or self.granted_at
            self.ended_at = _instant(record.get("ended_at")) or at
            self.end_reason = _text(record.get("reason"))
            lasted = record.get("lasted_seconds")
            self.lasted_seconds = lasted if type(lasted) is int else None
            self.revoke_failed = False
        else:
            self.end_reason = _text(record.get("deny_reason") or record.get("why") or record.get("error"))
        self.outcome = _text(record.get("status")) or event.split(".")[1]

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def access_until(self) -> datetime | None:
        """When access ended: its revoke, else (no revoke in the log yet) the approved end."""
        return self.ended_at or self.ends_at

    def had_access_at(self, moment: datetime) -> bool:
        if self.granted_at is None or moment < self.granted_at:
            return False
        until = self.access_until
        return until is None or moment < until

    @property
    def key(self) -> str:
        return self.part or self.request_id

    def lasted(self) -> int | None:
        if self.lasted_seconds is not None:
            return self.lasted_seconds
        if self.granted_at is not None and self.ended_at is not None:
            return int((self.ended_at - self.granted_at).total_seconds())
        return None

    def row(self) -> dict[str, Any]:
        """One report row, keyed by COLUMNS."""
        lasted = self.lasted()
        return {
            "request_id": self.request_id,
            "requester": self.requester,
            "target": self.target,
            "reason": self.reason,
            "source": self.source,
            "approvers": self.approvers,
            "requested_at": iso(self.requested_at),
            "granted_at": iso(self.granted_at),
            "ends_at": iso(self.ends_at),
            "ended_at": iso(self.ended_at),
            "lasted": format_duration(timedelta(seconds=lasted)) if lasted is not None else None,
            "lasted_seconds": lasted,
            "outcome": self.outcome,
            "end_reason": self.end_reason,
            "ended_by": self.ended_by,
            "mfa": self.mfa,
            "break_glass": self.break_glass,
            "changes": self.changes,
        }

    def grant(self) -> dict[str, Any]:
        """What `who` says of a grant."""
        if self.ended_at is not None:
            how = f"revoked ({self.end_reason})" if self.end_reason else "revoked"
        else:
            how = "no revoke in the log yet" + ("; a revoke failed" if self.revoke_failed else "")
        return {
            "request_id": self.request_id,
            "requester": self.requester,
            "source": self.source,
            "approvers": self.approvers,
            "break_glass": self.break_glass,
            "granted_at": iso(self.granted_at),
            "until": iso(self.access_until),
            "how": how,
        }


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class Reading:
    """Records from lines, passing over (and counting) lines that are not records: `verify` judges those."""

    def __init__(self, lines: Iterable[Line], needle: bytes | None = None) -> None:
        self.lines = lines
        self.needle = needle  # a cheap byte test before parsing: lines without it cannot concern the question
        self.unreadable = 0

    def __iter__(self) -> Iterator[tuple[dict[str, Any], datetime | None]]:
        for line in self.lines:
            if self.needle is not None and self.needle not in line.raw:
                continue
            try:
                record = json.loads(line.raw)
            except ValueError:
                self.unreadable += int(bool(line.raw.strip()))
                continue
            if isinstance(record, dict) and isinstance(record.get("request_id"), str):
                yield record, _instant(record.get("ts"))

    def warn(self) -> None:
        if self.unreadable:
            print(f"note: {self.unreadable} line(s) were not JSON records; run `audit verify`", file=sys.stderr)


def _key(record: dict[str, Any]) -> str:
    """What a record is about: a request, or one target (`part`) of a request of several targets."""
    part = record.get("part")
    return part if isinstance(part, str) and part else str(record["request_id"])


def _trail(record: dict[str, Any]) -> Trail:
    part = record.get("part")
    return Trail(record["request_id"], part if isinstance(part, str) and part else None)


def who(target: str, moment: datetime, reading: Reading) -> list[dict[str, Any]]:
    """The grants of `target` in force at `moment`, oldest first.

    A trail begins at its grant (every record carries the request's fields) and is dropped once closed
    outside the moment, so memory holds the target's open grants; records after that are passed over.
    """
    trails: dict[str, Trail] = {}
    for record, at in reading:
        if record.get("target") != target:
            continue
        key = _key(record)
        trail = trails.get(key)
        if trail is None:
            if record.get("event") not in BEGINS:
                continue  # before its grant, or after it closed
            trail = trails[key] = _trail(record)
        trail.add(record, at)
        if trail.closed and not trail.had_access_at(moment):
            del trails[key]  # closed: nothing later changes its answer
    found = [trail for trail in trails.values() if trail.had_access_at(moment)]
    return [trail.grant() for trail in sorted(found, key=lambda t: (t.granted_at, t.request_id))]


@dataclass(frozen=True)
class Filters:
    """A report's filters; a request's span runs from its first record to its close (open: no end)."""

    since: datetime | None = None
    until: datetime | None = None
    target: str | None = None
    user: str | None = None  # the requester or one of the approvers

    def keep(self, trail: Trail) -> bool:
        if self.target is not None and trail.target != self.target:
            return False
        if self.user is not None and self.user != trail.requester and self.user not in trail.approvers:
            return False
        start = trail.requested_at or trail.granted_at
        end = trail.ended_at or trail.closed_at
        if self.until is not None and start is not None and start >= self.until:
            return False
        return not (self.since is not None and end is not None and end < self.since)


def report(reading: Reading, filters: Filters) -> Iterator[dict[str, Any]]:
    """One row per request, in the order requests closed (still open ones last), as the files stream.

    A closed request waits LINGER of log time for late records (its grant.activity), then its row is
    given and its trail forgotten; records of it that come later still (within REMEMBER) are passed
    over. Memory holds the open requests, the last hour's closed ones, and a day of ids.
    """
    trails: dict[str, Trail] = {}
    closed: deque[Trail] = deque()
    done = _Given()
    for record, at in reading:
        key = _key(record)
        if at is not None:
            done.forget(at)
        if key in done:
            continue
        trail = trails.get(key)
        if trail is None:
            trail = trails[key] = _trail(record)
        was_closed = trail.closed
        trail.add(record, at)
        if trail.closed and not was_closed:
            closed.append(trail)
        while at is not None and closed and closed[0].closed_at is not None and at - closed[0].closed_at > LINGER:
            yield from _given(closed.popleft(), trails, done, filters)
    while closed:
        yield from _given(closed.popleft(), trails, done, filters)
    for trail in list(trails.values()):
        yield from _given(trail, trails, done, filters)


class _Given:
    """The ids of the rows given, in the order given (a deque: a dict popped from its front slows down)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.order: deque[tuple[datetime | None, str]] = deque()

    def __contains__(self, key: str) -> bool:
        return key in self.ids

    def add(self, trail: Trail) -> None:
        self.ids.add(trail.key)
        self.order.append((trail.closed_at, trail.key))

    def forget(self, at: datetime) -> None:
        """Drop the ids of rows given more than REMEMBER of log time ago: no record of theirs comes so late."""
        while self.order and (self.order[0][0] is None or at - self.order[0][0] > REMEMBER):
            self.ids.discard(self.order.popleft()[1])


def _given(trail: Trail, trails: dict[str, Trail], done: _Given, filters: Filters) -> Iterator[dict[str, Any]]:
    trails.pop(trail.key, None)
    done.add(trail)
    if filters.keep(trail):
        yield trail.row()
