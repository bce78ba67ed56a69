"""Extension rules (docs/command-and-slack.md): more time on a grant is judged as a request is, twice.

Beside the request transitions (requests.py `request_extension`, `approve_extension`): the web judges
an extension here when it is asked (`check_extension`, `check_extension_end`), and a worker judges the
approved extension again here before it moves the markers (`extension_refusal`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from jit_lb.access import commands
from jit_lb.access.approvers import Approvers
from jit_lb.access.breakglass import still_covers
from jit_lb.access.durations import format_duration
from jit_lb.access.errors import LOCKED, CommandError
from jit_lb.access.policy import Policy, Target
from jit_lb.access.requests import AccessRequest, Status
from jit_lb.clock import CLOCK_SKEW


def check_extension(
    policy: Policy,
    approvers: Approvers,
    user: str,
    request: AccessRequest,
    duration: timedelta,
    reason: str,
    locked: bool,
    now: datetime,
) -> Target:
    """The target of an extension `user` may ask for now; CommandError saying why not.

    Only the requester, of a granted request; the target's duration and reason rules; no lockdown, the
    requester still allowed to ask, and no freeze of the target reaching into the time it adds.
    """
    if user != request.requester:
        raise CommandError(f"only <@{request.requester}>, who asked for {request.visible_id}, can extend it")
    target = policy.target_for(request.target)
    if target is None or request.ends_at is None or request.status is not Status.GRANTED:
        raise CommandError(f"{request.visible_id} is {request.status}, not granted; there is nothing to extend")
    commands.check_duration(request.target, target, duration)
    commands.check_reason(request.target, target, reason)
    if locked:
        raise CommandError(LOCKED)
    if request.break_glass:
        if not still_covers(policy, request, approvers.directory.members):
            raise CommandError(f"break-glass no longer covers you on `{request.target}`, so you cannot extend it")
    elif not approvers.may_request(user, target):
        raise CommandError(f"you may no longer request `{request.target}`, so you cannot extend {request.visible_id}")
    freeze = policy.freeze_during(request.target, now, request.ends_at + duration)
    if freeze is not None:
        until = freeze.to.strftime("%Y-%m-%d %H:%M UTC")
        raise CommandError(
            f"`{request.target}` is frozen from {freeze.from_:%Y-%m-%d %H:%M} UTC until {until}: {freeze.reason}; "
            "an extension may not reach into a freeze"
        )
    return target


def check_extension_end(request: AccessRequest, target: Target, duration: timedelta, now: datetime) -> None:
    """CommandError when `duration` more would end the grant further from now than the target's `max_duration`."""
    assert request.ends_at is not None
    if request.ends_at + duration - now > target.max_duration:
        raise CommandError(
            f"that would end {request.visible_id} more than {format_duration(target.max_duration)} from now, "
            f"the most `{request.target}` allows"
        )


def extension_refusal(
    policy: Policy, approvers: Approvers, request: AccessRequest, target: Target, locked: bool, now: datetime
) -> str | None:
    """Why the approved extension last recorded on `request` may not move its markers now; None when it may.

    An extension is judged as a request is (docs/command-and-slack.md): no lockdown, the requester
    still allowed to ask, no freeze of the target reaching into the time it adds, a code from the
    requester and from each approver counted on a target that requires MFA, enough approvals from
    people who still approve it, and an end within the target's `max_duration` from now.
    """
    extension = request.extensions[-1] if request.extensions else None
    if extension is None or extension.outcome != "approved" or request.ends_at is None:
        return None
    if locked:
        return "jit-lb is locked down"
    if request.break_glass:
        if not still_covers(policy, request, approvers.directory.members):
            return f"break-glass no longer covers <@{request.requester}> on `{request.target}`"
    elif not approvers.may_request(request.requester, target):
        return f"<@{request.requester}> may no longer request `{request.target}` under the policy in force"
    added_from = request.ends_at - timedelta(seconds=extension.duration_seconds)
    freeze = policy.freeze_during(request.target, min(now, added_from), request.ends_at)
    if freeze is not None:
        return f"`{request.target}` is frozen from {freeze.from_:%Y-%m-%d %H:%M} UTC: {freeze.reason}"
    if target.require_mfa and not extension.mfa:
        return f"`{request.target}` requires MFA and this extension was asked without a one-time code"
    allowed = approvers.of(target)
    valid = {
        a.user
        for a in extension.approvals
        if a.user in allowed and a.user != request.requester and (a.mfa or not target.require_mfa)
    }
    if len(valid) < target.approvals_required:
        return f"its approvals no longer meet the policy ({len(valid)} of {target.approvals_required} count)"
    if request.ends_at - now > target.max_duration + CLOCK_SKEW:
        most = format_duration(target.max_duration)
        return f"it would end more than {most} from now, the most `{request.target}` allows"
    return None
