"""`policy diff`: what an edit of the policy changes, and which active grants it would end (reason `policy`).

It reads two files and, when given them, the open requests; it writes nothing anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from jit_lb.access.durations import format_duration
from jit_lb.access.policy import Policy, Target, spec_record
from jit_lb.access.requests import AccessRequest, Status
from jit_lb.policytools.judge import people_of

# Which heading a target's field is reported under (the ones docs/policy-tools.md names, then the rest).
_HEADINGS = {
    "grant": "grant spec",
    "approvers": "approvers",
    "approvals_required": "approvers",
    "requesters": "requesters",
    "min_duration": "limits",
    "max_duration": "limits",
    "default_duration": "limits",
    "durations": "limits",
    "idle_timeout": "limits",
}
_ORDER = ["grant spec", "approvers", "requesters", "limits", "other"]


def ended_by(policy: Policy, request: AccessRequest) -> str | None:
    """Why `policy` ends this grant at once (reason `policy`), or None: the reconciler's rule (workers/reconcile.py)."""
    if request.status is not Status.GRANTED:
        return None
    target = policy.target_for(request.target)
    if target is None:
        return f"its target `{request.target}` leaves the policy"
    if request.grant_spec is not None and request.grant_spec != spec_record(target.grant):
        return f"the grant spec of `{request.target}` changes"
    return None


def diff(old: Policy, new: Policy) -> list[str]:
    """The lines `python -m bot policy diff` prints about the policies themselves."""
    added = sorted(set(new.targets) - set(old.targets))
    removed = sorted(set(old.targets) - set(new.targets))
    lines = [f"targets added: {', '.join(added) or 'none'}"]
    lines.append(f"targets removed: {', '.join(removed) or 'none'}" + (" (their grants end)" if removed else ""))
    changed = []
    for name in sorted(set(old.targets) & set(new.targets)):
        details = _target_changes(old, new, name)
        if details:
            changed += [f"  {name}:", *(f"    {line}" for line in details)]
    lines.append("targets changed:" if changed else "targets changed: none")
    lines += changed
    wide = [f"  {line}" for line in _policy_changes(old, new)]
    lines.append("policy-wide changes:" if wide else "policy-wide changes: none")
    return lines + wide


def grants_ended(new: Policy, active: Iterable[AccessRequest]) -> list[str]:
    """One line for each active grant that `new` would end, saying why."""
    lines = []
    for request in active:
        why = ended_by(new, request)
        if why is not None:
            until = request.ends_at.isoformat().replace("+00:00", "Z") if request.ends_at else "?"
            source = request.cidr or request.role_name or "?"
            lines.append(f"  {request.id}  {request.target}  {request.requester} ({source}) until {until}: {why}")
    return lines


def _target_changes(old: Policy, new: Policy, name: str) -> list[str]:
    before, after = old.targets[name], new.targets[name]
    found: dict[str, list[str]] = {}
    for key in sorted(set(type(before).model_fields)):
        was, now = getattr(before, key), getattr(after, key)
        if key == "grant":
            was, now = spec_record(was), spec_record(now)
        if was != now:
            found.setdefault(_HEADINGS.get(key, "other"), []).extend(_changes(key, was, now))
    for field, heading in (("approvers", "approvers"), ("requesters", "requesters")):
        moved = _people_moved(old, new, before, after, name, field)
        if moved:
            found.setdefault(heading, []).append(moved)
    lines = []
    for heading in _ORDER:
        if heading in found:
            note = " (its active grants end, reason policy)" if heading == "grant spec" else ""
            lines.append(f"{heading}{note}: {'; '.join(found[heading])}")
    return lines


def _people_moved(old: Policy, new: Policy, before: Target, after: Target, name: str, field: str) -> str | None:
    """Who gains or loses the right, through the list itself or through the roles it names."""
    if field == "requesters" and (before.requesters is None or after.requesters is None):
        return None  # "every principal" on one side: the principals' own changes say the rest
    where = f"targets.{name}.{field}"
    was = _names(people_of(old, getattr(before, field) or [], where, None))
    now = _names(people_of(new, getattr(after, field) or [], where, None))
    if was == now:
        return None
    verb = "approve" if field == "approvers" else "request"
    parts = [f"+{who}" for who in sorted(now - was)] + [f"-{who}" for who in sorted(was - now)]
    return f"who may {verb}: {' '.join(parts)}"


def _names(people: Any) -> set[str]:
    return set(people.users) | {f"usergroup:{group}" for group in people.unknown_groups}


def _policy_changes(old: Policy, new: Policy) -> list[str]:
    lines = []
    for key in type(old).model_fields:
        if key == "targets":
            continue
        was, now = getattr(old, key), getattr(new, key)
        if was != now:
            lines += _changes(key, _plain(was), _plain(now))
    return lines


def _changes(where: str, was: Any, now: Any) -> list[str]:
    """`where: before -> after`, going into mappings so that one changed field is named, not the whole section."""
    was, now = _plain(was), _plain(now)
    if isinstance(was, dict) and isinstance(now, dict):
        lines = []
        for key in sorted(set(was) | set(now), key=str):
            if was.get(key) != now.get(key):
                lines += _changes(f"{where}.{key}", was.get(key, _ABSENT), now.get(key, _ABSENT))
        return lines
    return [f"{where}: {_show(was)} -> {_show(now)}"]


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _plain(value: Any) -> Any:
    """Models as mappings and durations as typed, so that changes read as the file does."""
    if hasattr(value, "model_dump"):
        return {key: _plain(getattr(value, key)) for key in type(value).model_fields}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, timedelta):
        return format_duration(value)
    return value


def _show(value: Any) -> str:
    if isinstance(value, _Absent):
        return "(absent)"
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_show(item)}" for key, item in value.items()) + "}"
    return str(value)
