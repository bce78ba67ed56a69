"""Auto-approval from on-call (docs/approvals.md): whether a pending request is approved by `system`, and why not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jit_lb.access.durations import format_duration
from jit_lb.access.oncall import PagerDuty
from jit_lb.access.policy import Target
from jit_lb.access.requests import AccessRequest, AutoApproval


@dataclass(frozen=True)
class Verdict:
    """An auto-approval, or the sentence the card shows in its place (empty: the target has no auto-approval)."""

    approval: AutoApproval | None = None
    why_not: str = ""


def judge_on_call(
    request: AccessRequest, target: Target, email: str | None, pagerduty: PagerDuty | None, now: datetime
) -> Verdict:
    """Ask PagerDuty now, live, whether the requester is on call as the target's `auto_approve` wants.

    Checked in the order that costs least: the duration first, then whether PagerDuty can be asked
    at all. Only a qualifying on-call entry approves; anything else leaves the request to its approvers.
    """
    rules, limit = target.auto_approve, target.auto_approve_limit()
    if rules is None or limit is None or request.break_glass:
        return Verdict()
    if request.duration > limit:
        return Verdict(
            why_not=f"{request.duration_text} is longer than the {format_duration(limit)} auto-approval allows"
        )
    if pagerduty is None:
        return Verdict(why_not="PagerDuty is not configured (PAGERDUTY_TOKEN)")
    if not email:
        return Verdict(why_not=f"no e-mail is known for <@{request.requester}> to find them in PagerDuty")
    answer = pagerduty.on_call(email, rules.on_call.schedules, rules.on_call.escalation_level, now)
    if answer.shift is None:
        return Verdict(why_not=answer.why_not)
    shift = answer.shift
    if rules.end_with_shift and shift.end is not None and shift.end <= now:
        return Verdict(why_not="the on-call shift is ending")
    return Verdict(
        AutoApproval(
            schedule=shift.schedule,
            escalation_level=shift.escalation_level,
            shift_start=shift.start,
            shift_end=shift.end,
            checked_at=now,
            end_with_shift=rules.end_with_shift,
        )
    )
