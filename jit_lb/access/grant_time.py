"""Grant-time rules (docs/policy.md): an approved request is judged again, under the policy in force, when its
grant is about to be applied.

Beside the request transitions (requests.py `approve`, `grant`): a worker's grant job asks `grant_refusal`
before it applies anything; a refusal fails the request (a scheduled one expires at its start) with its words,
and nothing is applied at the load balancer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from jit_lb.access.approvers import Approvers
from jit_lb.access.breakglass import still_covers
from jit_lb.access.durations import format_duration
from jit_lb.access.policy import Policy, Target
from jit_lb.access.requests import AccessRequest


def grant_refusal(
    policy: Policy, approvers: Approvers, request: AccessRequest, target: Target | None, now: datetime
) -> str | None:
    """Why an approved request may not be applied under today's policy (docs/policy.md); None when it may.

    Its target must still be there and its requester still allowed to ask; its approvals count
    only from people who still approve the target, and only if they are younger than `pending_ttl`
    (a scheduled request's: counted from its start).
    """
    if target is None:
        return f"target `{request.target}` is no longer in the policy"
    if request.break_glass:
        if not still_covers(policy, request, approvers.directory.members):
            return (
                f"break-glass no longer covers <@{request.requester}> on `{request.target}` under the policy in force"
            )
        if target.require_mfa and not request.requested_with_mfa:
            return f"`{request.target}` requires MFA and this break-glass was not made with a one-time code"
        return None  # no approval to judge: its approvers review it afterwards
    # A freeze refuses requests; an approval given before it (or during it) does not carry one through it.
    freeze = policy.freeze_of(request.target, now)
    if freeze is not None:
        return f"`{request.target}` is frozen until {freeze.to:%Y-%m-%d %H:%M} UTC: {freeze.reason}"
    if not approvers.may_request(request.requester, target):
        return f"<@{request.requester}> may no longer request `{request.target}` under the policy in force"
    if target.require_mfa and not request.requested_with_mfa:
        return f"`{request.target}` requires MFA now and this request was made without a one-time code"
    if request.auto_approval is not None:
        return _auto_approval_refusal(request, target, policy.pending_ttl, now)
    allowed = approvers.of(target)
    # A scheduled request's approvals keep until its start (`pending_ttl` bounds only the wait for them); from the
    # start they age as any approval does, so a start job late by more than `pending_ttl` finds them stale.
    start = request.starts_at
    # On a target that requires MFA, only approvals made with a code count (it may have required it only since).
    fresh = {
        a.user
        for a in request.approvals
        if now - (max(a.at, start) if start else a.at) <= policy.pending_ttl and (a.mfa or not target.require_mfa)
    }
    valid = {user for user in fresh if user in allowed and user != request.requester}
    if len(valid) < target.approvals_required:
        stale = sorted({a.user for a in request.approvals} - fresh)
        gone = sorted(fresh - valid)
        details = "; ".join(
            part
            for part in (
                f"no longer approvers: {', '.join(f'<@{u}>' for u in gone)}" if gone else "",
                f"approved too long ago: {', '.join(f'<@{u}>' for u in stale)}" if stale else "",
            )
            if part
        )
        return (
            f"its approvals no longer meet the policy ({len(valid)} of {target.approvals_required} count"
            f"{'; ' + details if details else ''})"
        )
    return None


def _auto_approval_refusal(request: AccessRequest, target: Target, pending_ttl: timedelta, now: datetime) -> str | None:
    """An auto-approval counts while the target still auto-approves from that schedule, for that long, while the
    shift it stood on lasts, and no longer after PagerDuty was asked than a click's approval counts."""
    approval, rules, limit = request.auto_approval, target.auto_approve, target.auto_approve_limit()
    assert approval is not None
    if rules is None or limit is None or approval.schedule not in rules.on_call.schedules:
        return f"`{request.target}` no longer auto-approves from on-call schedule {approval.schedule}"
    if approval.escalation_level > rules.on_call.escalation_level:
        return f"`{request.target}` now auto-approves only escalation level {rules.on_call.escalation_level} or nearer"
    if request.duration > limit:
        return f"`{request.target}` now auto-approves at most {format_duration(limit)}"
    if approval.shift_end is not None and approval.shift_end <= now:
        # Whether or not the grant ends with the shift, it is not begun once the shift it was approved on is over.
        return "the on-call shift it was approved for has ended"
    if now - approval.checked_at > pending_ttl:
        return f"it was approved on call too long ago (more than pending_ttl, {format_duration(pending_ttl)})"
    return None
