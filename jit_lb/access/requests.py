"""Access requests and their life cycle, as pure functions of the request, the actor and `now`."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jit_lb.access.durations import format_duration
from jit_lb.access.errors import ApprovalError, TransitionError

# Request ids are short and easy to read aloud: no 0/o, 1/l/i.
_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
ID_PREFIX = "jit-"
# A request of several targets (a group) shows one id; each target's part is stored under that id and
# `-1` … `-5` (the alphabet has no '-', so a part's id never looks like another request's).
ID_PATTERN = r"^jit-[23456789abcdefghjkmnpqrstuvwxyz]{6}(?:-[1-5])?$"
MAX_TARGETS = 5  # targets in one request
_PART_ID = re.compile(rf"(jit-[{_ID_ALPHABET}]{{6}})-[1-{MAX_TARGETS}]")


class Status(StrEnum):
    """Where a request stands; see docs/index.md (How it works)."""

    PENDING = "pending"
    APPROVED = "approved"
    GRANTED = "granted"
    REVOKED = "revoked"
    DENIED = "denied"
    EXPIRED = "expired"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        return self in {Status.PENDING, Status.APPROVED, Status.GRANTED}


class EndReason(StrEnum):
    """Why a grant ended (docs/auditors.md: `grant.revoked`'s `reason`)."""

    EXPIRED = "expired"  # its time ran out
    REVOKED = "revoked"  # a person ended it
    SWEEP = "sweep"  # the sweep found it past its end at the load balancer
    POLICY = "policy"  # its target left the policy, or its grant spec changed
    LOCKDOWN = "lockdown"  # an admin locked every grant down
    IDLE = "idle"  # unused past its target's idle_timeout


class Approval(BaseModel):
    model_config = ConfigDict(frozen=True)

    user: str
    at: datetime
    mfa: bool = False  # the approver stepped up with a one-time code for it


class AutoApproval(BaseModel):
    """Why a request was approved without a click: the requester's on-call entry when PagerDuty was asked."""

    model_config = ConfigDict(frozen=True)

    schedule: str
    escalation_level: int
    shift_start: datetime | None = None
    shift_end: datetime | None = None
    checked_at: datetime
    end_with_shift: bool = False  # the grant ends at `shift_end` if that comes first

    def as_record(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "escalation_level": self.escalation_level,
            "start": self.shift_start.isoformat() if self.shift_start else None,
            "end": self.shift_end.isoformat() if self.shift_end else None,
            "checked_at": self.checked_at.isoformat(),
            "end_with_shift": self.end_with_shift,
        }


class Extension(BaseModel):
    """A request for more time on a granted request; it needs approval again."""

    model_config = ConfigDict(frozen=True)

    duration_seconds: int
    reason: str
    requested_at: datetime
    mfa: bool = False  # asked with a one-time code (or within its window)
    approvals: tuple[Approval, ...] = ()
    outcome: str = "pending"  # pending, approved, denied, refused (approved, then judged again and refused)
    why: str | None = None  # why an approved extension was refused when the markers were to move
    decided_by: str | None = None
    card_channel: str | None = None
    card_ts: str | None = None

    @property
    def duration_text(self) -> str:
        return format_duration(timedelta(seconds=self.duration_seconds))

    @property
    def approvers(self) -> list[str]:
        return [approval.user for approval in self.approvals]


class Use(BaseModel):
    """One source's use as HAProxy's stick table counts it: at a moment, or the difference over a session.

    A count is None where the table does not store it (or, in a difference, where either end lacked it).
    """

    model_config = ConfigDict(frozen=True)

    connections: int | None = None  # conn_cnt
    http_requests: int | None = None  # http_req_cnt
    bytes_in: int | None = None  # bytes_in_cnt: from the source
    bytes_out: int | None = None  # bytes_out_cnt: to the source
    open_connections: int | None = None  # conn_cur at that moment; never part of a difference


class Snapshot(BaseModel):
    """A target's surroundings at the load balancer at one moment, less jit-lb's own objects (docs/policy.md).

    `entries` maps what (a rule, an attribute, a server) to its state, in words; see workers/activity.py
    for the caps. What could not be read says why (`unreadable`, `use_unreadable`) rather than guess.
    """

    model_config = ConfigDict(frozen=True)

    at: datetime
    entries: dict[str, str] = Field(default_factory=dict)
    left_out: int = 0  # entries past the caps, not kept: the kept ones are the first by `what`
    unreadable: str | None = None
    use: Use | None = None  # haproxy_acl with a stick_table: the source's counts at `at`
    use_unreadable: str | None = None


class Change(BaseModel):
    """One difference between the start and the end of a session; `before` None is added, `after` None removed."""

    model_config = ConfigDict(frozen=True)

    what: str
    before: str | None = None
    after: str | None = None


class Activity(BaseModel):
    """What happened during a session (docs/policy.md): the changes around the target, and the source's use."""

    model_config = ConfigDict(frozen=True)

    changes: tuple[Change, ...] | None = None  # None: not known, and `unknown` says why
    changes_left_out: int = 0  # changes past the cap, counted but not kept
    unknown: str | None = None
    not_compared: str | None = None  # what a capped snapshot kept out of the comparison
    snapshot_at_start: datetime | None = None
    snapshot_at_end: datetime | None = None
    use: Use | None = None  # haproxy_acl with a stick_table: the use during the session
    use_unknown: str | None = None
    use_reset: bool = False  # a count fell (the entry expired or HAProxy restarted): counted from the reset


class AccessRequest(BaseModel):
    """One `/jit request` from creation to its end."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=ID_PATTERN)
    target: str
    # A request of several targets: the id people see and type, and every target of it in order (docs/approvals.md).
    group: str | None = None
    group_targets: tuple[str, ...] = ()
    requester: str
    reason: str
    duration_seconds: int
    cidr: str | None = None
    role_name: str | None = None
    status: Status = Status.PENDING
    created_at: datetime
    pending_until: datetime
    approvals_required: int = 1
    approvals: tuple[Approval, ...] = ()
    decided_by: str | None = None
    decided_at: datetime | None = None
    deny_reason: str | None = None  # what the person who denied it wrote, when the target asks for it
    requested_with_mfa: bool = False  # the requester stepped up with a one-time code for it
    break_glass: bool = False  # applied at once, without approval; approvers review it afterwards
    auto_approval: AutoApproval | None = None  # approved by `system` because its requester was on call
    not_auto_approved: str | None = None  # why a target with auto-approval still waits for approvers
    review: str | None = None  # a break-glass grant's review: "acknowledged" or "flagged"
    reviewed_by: str | None = None
    starts_at: datetime | None = None  # a scheduled window (`--at`): approved ahead, applied then (docs/approvals.md)
    granted_at: datetime | None = None
    ends_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    ended_by: str | None = None
    failure: str | None = None
    created_objects: tuple[str, ...] = ()
    # What the grant was applied under and to, so that its revoke never depends on today's policy.
    grant_spec: dict[str, Any] | None = None
    object_refs: tuple[str, ...] = ()
    removed_objects: tuple[str, ...] = ()
    verified: bool | None = None
    # What surrounded the target when the grant was applied, and what happened during it (docs/policy.md).
    start_snapshot: Snapshot | None = None
    activity: Activity | None = None
    extension: Extension | None = None  # the one awaiting approval, if any
    extensions: tuple[Extension, ...] = ()  # decided ones, for the record
    # Where Slack shows the request: the card, the audit thread, and where it was asked for.
    origin_channel: str | None = None
    card_channel: str | None = None
    card_ts: str | None = None
    thread_channel: str | None = None
    thread_ts: str | None = None

    @property
    def visible_id(self) -> str:
        """The id people see and type: the group's for a part of a request of several targets, else its own."""
        return self.group or self.id

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.duration_seconds)

    @property
    def duration_text(self) -> str:
        return format_duration(self.duration)

    @property
    def approvers(self) -> list[str]:
        return [approval.user for approval in self.approvals]

    @property
    def waits_for_start(self) -> bool:
        """Approved ahead of its scheduled start, not applied yet."""
        return self.status is Status.APPROVED and self.starts_at is not None

    def approval_place(self, user: str) -> int:
        """Which approval `user`'s was (1 for the first), or how many there are when `user` has not approved."""
        return next((i + 1 for i, a in enumerate(self.approvals) if a.user == user), len(self.approvals))

    def lasted(self) -> timedelta | None:
        if self.granted_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.granted_at


def new_request_id() -> str:
    return ID_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


def part_id(group: str, index: int) -> str:
    """The stored id of a group's `index`th target (1 for the first)."""
    return f"{group}-{index}"


def group_of(request_id: str) -> str:
    """The id people see for a stored id: a part's group, or the id itself (any other id, e.g. an odd marker's)."""
    part = _PART_ID.fullmatch(request_id)
    return part.group(1) if part else request_id


def audit_ids(request_id: str) -> dict[str, str]:
    """A stored id as audit records carry it when only the id is known (a marker at the load balancer):
    `request_id` the id people saw, and `part` the stored one when they differ (docs/auditors.md)."""
    visible = group_of(request_id)
    return {"request_id": visible} | ({"part": request_id} if visible != request_id else {})


def target_fields(names: str | None) -> dict[str, Any]:
    """How a record names targets given as typed (a command's, a form's, a step-up's): `target` for one, `targets`
    for a comma-joined list of several (as other records of a request of several targets do)."""
    if names and "," in names:
        return {"target": None, "targets": [name for name in names.split(",") if name][: MAX_TARGETS + 1]}
    return {"target": names}


def approve(request: AccessRequest, who: str, now: datetime, mfa: bool = False) -> AccessRequest:
    """Count `who`'s approval; the request turns `approved` once enough distinct approvers agree.

    The caller has already checked that `who` is an approver of the target.
    """
    if who == request.requester:
        raise ApprovalError("you cannot approve your own request")
    if request.status is not Status.PENDING:
        raise TransitionError(f"request {request.visible_id} is already {request.status}")
    if now >= request.pending_until:
        raise TransitionError(f"request {request.visible_id} expired before it was approved")
    if who in request.approvers:
        raise ApprovalError(f"you have already approved {request.visible_id}; it needs another approver")
    approvals = (*request.approvals, Approval(user=who, at=now, mfa=mfa))
    if len(approvals) < request.approvals_required:
        return request.model_copy(update={"approvals": approvals})
    return request.model_copy(
        update={"approvals": approvals, "status": Status.APPROVED, "decided_by": who, "decided_at": now}
    )


def auto_approve(request: AccessRequest, approval: AutoApproval) -> AccessRequest:
    """A pending request approved by `system` because its requester is on call (docs/approvals.md)."""
    if request.status is not Status.PENDING:
        raise TransitionError(f"request {request.visible_id} is already {request.status}")
    if approval.checked_at >= request.pending_until:
        raise TransitionError(f"request {request.visible_id} expired before it was approved")
    return request.model_copy(
        update={
            "status": Status.APPROVED,
            "decided_by": "system",
            "decided_at": approval.checked_at,
            "auto_approval": approval,
        }
    )


def grant_end(request: AccessRequest, start: datetime) -> datetime:
    """When a grant applied at `start` ends: its duration later, or when the on-call shift it rode on ends."""
    end = start + request.duration
    approval = request.auto_approval
    if approval is not None and approval.end_with_shift and approval.shift_end is not None:
        return min(end, approval.shift_end)
    return end


def break_glass(request: AccessRequest, who: str, now: datetime) -> AccessRequest:
    """A pending request turned approved at once by its requester, under the policy's break-glass rules."""
    if request.status is not Status.PENDING or who != request.requester:
        raise TransitionError(f"request {request.visible_id} cannot be a break-glass grant now")
    return request.model_copy(
        update={"status": Status.APPROVED, "decided_by": who, "decided_at": now, "break_glass": True}
    )


def review(request: AccessRequest, who: str, verdict: str) -> AccessRequest:
    """An approver's review of a break-glass grant: acknowledged, or flagged for the admins."""
    if not request.break_glass:
        raise TransitionError(f"{request.visible_id} was not a break-glass grant")
    if request.review is not None:
        raise TransitionError(f"{request.visible_id} was already {request.review} by <@{request.reviewed_by}>")
    if who == request.requester:
        raise ApprovalError("you cannot review your own break-glass grant")
    return request.model_copy(update={"review": verdict, "reviewed_by": who})


def deny(request: AccessRequest, who: str, now: datetime, reason: str | None = None) -> AccessRequest:
    """Close a pending request as denied by `who`, with the reason they gave, if any."""
    if request.status is not Status.PENDING:
        raise TransitionError(f"request {request.visible_id} is already {request.status}")
    return request.model_copy(
        update={"status": Status.DENIED, "decided_by": who, "decided_at": now, "deny_reason": reason or None}
    )


def expire(request: AccessRequest, now: datetime) -> AccessRequest:
    if request.status is not Status.PENDING:
        raise TransitionError(f"request {request.visible_id} is already {request.status}")
    if now < request.pending_until:
        raise TransitionError(f"request {request.visible_id} is still within its approval window")
    return request.model_copy(update={"status": Status.EXPIRED, "decided_by": "system", "decided_at": now})


def cancel(request: AccessRequest, why: str, now: datetime, by: str = "system") -> AccessRequest:
    """Withdraw a pending request, or a scheduled one approved ahead of its start: by its requester, or by jit-lb
    (its card could not be posted, a lockdown)."""
    if request.status is not Status.PENDING and not request.waits_for_start:
        raise TransitionError(f"request {request.visible_id} is already {request.status}")
    return request.model_copy(update={"status": Status.CANCELLED, "decided_by": by, "decided_at": now, "failure": why})


def expire_at_start(request: AccessRequest, why: str, now: datetime) -> AccessRequest:
    """A scheduled request judged again at its start and refused: it ends `expired`, saying why; nothing applied."""
    if not request.waits_for_start:
        raise TransitionError(f"request {request.visible_id} is {request.status}, not waiting for its start")
    return request.model_copy(update={"status": Status.EXPIRED, "failure": why, "ended_at": now})


def fix_end(request: AccessRequest, ends_at: datetime, spec: dict[str, Any]) -> AccessRequest:
    """Set an approved request's end and grant spec once, before anything is applied, so a retried grant keeps them."""
    if request.status is not Status.APPROVED:
        raise TransitionError(f"request {request.visible_id} is {request.status}, not approved")
    if request.ends_at is not None and request.grant_spec is not None:
        return request
    return request.model_copy(update={"ends_at": request.ends_at or ends_at, "grant_spec": request.grant_spec or spec})


def grant(
    request: AccessRequest,
    now: datetime,
    ends_at: datetime,
    objects: list[str],
    verified: bool,
    refs: list[str] | None = None,
    snapshot: Snapshot | None = None,
) -> AccessRequest:
    if request.status is not Status.APPROVED:
        raise TransitionError(f"request {request.visible_id} is {request.status}, not approved")
    return request.model_copy(
        update={
            "start_snapshot": snapshot,
            "status": Status.GRANTED,
            "granted_at": now,
            "ends_at": ends_at,
            "created_objects": tuple(objects),
            "object_refs": tuple(refs or ()),
            "verified": verified,
        }
    )


def fail(request: AccessRequest, why: str, now: datetime) -> AccessRequest:
    if request.status is not Status.APPROVED:
        raise TransitionError(f"request {request.visible_id} is {request.status}, not approved")
    return request.model_copy(update={"status": Status.FAILED, "failure": why, "ended_at": now})


def end(
    request: AccessRequest,
    now: datetime,
    reason: EndReason,
    by: str,
    removed: list[str],
    verified: bool,
    activity: Activity | None = None,
) -> AccessRequest:
    if request.status is not Status.GRANTED:
        raise TransitionError(f"request {request.visible_id} is {request.status}, not granted")
    return request.model_copy(
        update={
            "activity": activity,
            "status": Status.REVOKED,
            "ended_at": now,
            "end_reason": reason,
            "ended_by": by,
            "removed_objects": tuple(removed),
            "verified": verified,
        }
    )


def request_extension(
    request: AccessRequest, extra: timedelta, reason: str, now: datetime, mfa: bool = False
) -> AccessRequest:
    if request.status is not Status.GRANTED:
        raise TransitionError(f"{request.visible_id} is {request.status}, not granted; there is nothing to extend")
    if request.extension is not None:
        raise TransitionError(f"{request.visible_id} already has an extension waiting for approval")
    extension = Extension(duration_seconds=int(extra.total_seconds()), reason=reason, requested_at=now, mfa=mfa)
    return request.model_copy(update={"extension": extension})


def refuse_extension(request: AccessRequest, number: int, why: str) -> AccessRequest:
    """Take back the approved extension numbered `number` (1-based) when it may not be applied: the grant's
    end moves back to where it was, and the extension is recorded `refused`."""
    if request.status is not Status.GRANTED or request.ends_at is None or len(request.extensions) != number:
        raise TransitionError(f"{request.visible_id} is not where that extension left it")
    done = request.extensions[-1]
    if done.outcome != "approved":
        raise TransitionError(f"that extension of {request.visible_id} is {done.outcome}")
    back = timedelta(seconds=done.duration_seconds)
    return request.model_copy(
        update={
            "extensions": (*request.extensions[:-1], done.model_copy(update={"outcome": "refused", "why": why})),
            "ends_at": request.ends_at - back,
            "duration_seconds": request.duration_seconds - done.duration_seconds,
        }
    )


def approve_extension(request: AccessRequest, who: str, now: datetime, mfa: bool = False) -> AccessRequest:
    """Count an approval of the pending extension; once enough agree, the grant's end moves."""
    extension = request.extension
    if who == request.requester:
        raise ApprovalError("you cannot approve your own extension")
    if extension is None or request.status is not Status.GRANTED:
        raise TransitionError(f"{request.visible_id} has no extension waiting for approval")
    if who in extension.approvers:
        raise ApprovalError(f"you have already approved this extension of {request.visible_id}")
    approvals = (*extension.approvals, Approval(user=who, at=now, mfa=mfa))
    if len(approvals) < request.approvals_required:
        return request.model_copy(update={"extension": extension.model_copy(update={"approvals": approvals})})
    assert request.ends_at is not None
    done = extension.model_copy(update={"approvals": approvals, "outcome": "approved", "decided_by": who})
    return request.model_copy(
        update={
            "extension": None,
            "extensions": (*request.extensions, done),
            "ends_at": request.ends_at + timedelta(seconds=extension.duration_seconds),
            "duration_seconds": request.duration_seconds + extension.duration_seconds,
        }
    )


def deny_extension(request: AccessRequest, who: str, now: datetime) -> AccessRequest:
    extension = request.extension
    if extension is None:
        raise TransitionError(f"{request.visible_id} has no extension waiting for approval")
    done = extension.model_copy(update={"outcome": "denied", "decided_by": who})
    return request.model_copy(update={"extension": None, "extensions": (*request.extensions, done)})
