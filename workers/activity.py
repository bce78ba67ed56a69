"""What happened during a session (docs/policy.md): snapshots when a grant is applied and when it ends, compared.

A snapshot is what a provider reads around the target (`Provider.snapshot`: the security group's other
rules, the ALB's listener, rules, attributes and target groups, the IAM role's other policies, HAProxy's
backends and servers), less jit-lb's own objects, and the source's counts where the load balancer keeps
them (`Provider.use_of`). What cannot be read is said, with why, and never guessed.

Snapshots are stored with the request (`AccessRequest.start_snapshot`), so they are kept small:

- at most MAX_ENTRIES entries and MAX_SNAPSHOT_CHARS characters of names and states together, the
  first by name kept and the rest counted (`left_out`); a name is cut to MAX_WHAT characters and a
  state to MAX_STATE, each ending in "…" when cut; a reason something was unreadable to MAX_WHY;
- at most MAX_CHANGES changes are kept in the activity (and its audit record), the rest counted.

When a snapshot was capped, only the names up to the last one both kept are compared, and the
activity says so (`not_compared`), rather than report what fell past the cap as removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jit_lb.access.errors import ProviderError
from jit_lb.access.requests import Activity, Change, Snapshot, Use, audit_ids
from jit_lb.runtime import Runtime
from workers.providers.base import Entries, GrantOrder, Provider

MAX_ENTRIES = 200
MAX_WHAT = 200
MAX_STATE = 200
MAX_SNAPSHOT_CHARS = 24_000
MAX_WHY = 500
MAX_CHANGES = 100

NO_START = "no start snapshot exists for this grant, so what changed during it cannot be told"
UNKNOWN_REQUEST = (
    "no start snapshot exists: Redis no longer knows this request (the sweep ended it by the marker at the "
    "load balancer), so what changed during the session cannot be told"
)
NO_STICK_TABLE = "the target names no stick_table, so HAProxy does not count its use"


# The surroundings read for one batch of grants of a spec, by the principal's role (or ""), with why unreadable.
Seen = dict[str, tuple[Entries | None, str | None]]


def observe(provider: Provider, order: GrantOrder, now: datetime, seen: Seen | None = None) -> Snapshot:
    """The target's surroundings and the order's source's use now, as far as they can be read; never raises.

    `seen` keeps the surroundings read for one batch of orders of the same spec: they differ only by the
    principal's role (IAM), so a batch of grants ending together reads them once a role, not once a grant.
    """
    key = order.role_name or ""
    if seen is not None and key in seen:
        entries, unreadable = seen[key]
    else:
        unreadable = None
        try:
            entries = provider.snapshot(order)
        except ProviderError as err:
            entries, unreadable = None, str(err)
        if seen is not None:
            seen[key] = (entries, unreadable)
    if entries is None and unreadable is None:
        unreadable = f"jit-lb does not read the load balancer around {order.spec.kind} grants"
    use, use_unreadable = None, None
    if order.cidr:
        try:
            use = provider.use_of(order.cidr)
        except ProviderError as err:
            use_unreadable = str(err)
        if use is None and use_unreadable is None and order.spec.kind == "haproxy_acl":
            use_unreadable = NO_STICK_TABLE
    kept, left_out = bounded(entries or {})
    return Snapshot(
        at=now,
        entries=kept,
        left_out=left_out,
        unreadable=_clip(unreadable, MAX_WHY) if unreadable else None,
        use=use,
        use_unreadable=_clip(use_unreadable, MAX_WHY) if use_unreadable else None,
    )


def bounded(entries: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """The entries within the caps, the first by name, and how many were left out."""
    ordered = sorted(entries.items())
    kept: dict[str, str] = {}
    size = 0
    for index, (whole_what, whole_state) in enumerate(ordered):
        what, state = _clip(whole_what, MAX_WHAT), _clip(whole_state, MAX_STATE)
        size += len(what) + len(state)
        if len(kept) >= MAX_ENTRIES or size > MAX_SNAPSHOT_CHARS:
            return kept, len(ordered) - index
        kept.setdefault(what, state)
    return kept, 0


def compare(start: Snapshot | None, end: Snapshot) -> Activity:
    """What changed between the snapshots, and the source's use between them; unknown, with why, where unread."""
    use, use_unknown, reset = _use_during(start, end)
    known: dict[str, Any] = {
        "snapshot_at_start": start.at if start is not None else None,
        "snapshot_at_end": end.at,
        "use": use,
        "use_unknown": use_unknown,
        "use_reset": reset,
    }
    if start is None:
        return Activity(unknown=NO_START, **known)
    if start.unreadable:
        return Activity(
            unknown=f"the load balancer could not be read when the grant was applied: {start.unreadable}", **known
        )
    if end.unreadable:
        return Activity(unknown=f"the load balancer could not be read when the grant ended: {end.unreadable}", **known)
    names = sorted(set(start.entries) | set(end.entries))
    not_compared = None
    capped = [snapshot for snapshot in (start, end) if snapshot.left_out]
    if capped:
        limit = min((max(snapshot.entries, default="") for snapshot in capped), default="")
        names = [name for name in names if name <= limit]
        not_compared = (
            f"the snapshots were capped ({start.left_out} entries left out at the start, {end.left_out} at the "
            f"end): what sorts after “{limit}” was not compared"
        )
    changes = [
        Change(what=name, before=start.entries.get(name), after=end.entries.get(name))
        for name in names
        if start.entries.get(name) != end.entries.get(name)
    ]
    return Activity(
        changes=tuple(changes[:MAX_CHANGES]),
        changes_left_out=max(0, len(changes) - MAX_CHANGES),
        not_compared=not_compared,
        **known,
    )


def _use_during(start: Snapshot | None, end: Snapshot) -> tuple[Use | None, str | None, bool]:
    """The source's use between the snapshots, or why it is not known, and whether a count was reset meanwhile."""
    if end.use is None:
        return None, end.use_unreadable, False
    if start is None:
        return None, "no start snapshot exists, so the use during the session cannot be told", False
    if start.use is None:
        why = start.use_unreadable or "it was not read when the grant was applied"
        return None, f"the use was not read when the grant was applied: {why}", False
    before, after = start.use.model_dump(), end.use.model_dump()
    counts = [name for name in after if name != "open_connections"]
    reset = any(after[n] is not None and before[n] is not None and after[n] < before[n] for n in counts)
    # A count that fell was reset (the entry expired, or HAProxy restarted): what it holds now is all we know.
    used = {
        name: None if after[name] is None or before[name] is None else after[name] - (0 if reset else before[name])
        for name in counts
    }
    return Use(**used), None, reset


def audit_fields(activity: Activity) -> dict[str, Any]:
    """The fields of a `grant.activity` record (docs/auditors.md, docs/policy.md); None fields are left out."""
    fields: dict[str, Any] = {
        "changes": None if activity.changes is None else [change.model_dump() for change in activity.changes],
        "changes_left_out": activity.changes_left_out or None,
        "changes_unknown": activity.unknown,
        "not_compared": activity.not_compared,
        "snapshot_at_start": activity.snapshot_at_start,
        "snapshot_at_end": activity.snapshot_at_end,
        "use_unknown": activity.use_unknown,
        "use_reset": activity.use_reset or None,
    }
    if activity.use is not None:
        fields |= {
            "connections": activity.use.connections,
            "http_requests": activity.use.http_requests,
            "bytes_in": activity.use.bytes_in,
            "bytes_out": activity.use.bytes_out,
        }
    return fields


def record_unknown(rt: Runtime, request_id: str, kind: str | None = None) -> None:
    """Record that a grant the sweep ended for a request Redis no longer knows has no start snapshot."""
    rt.audit.record(
        "grant.activity",
        actor="system",
        **audit_ids(request_id),
        target=None,
        kind=kind,
        changes_unknown=UNKNOWN_REQUEST,
        must=True,
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
