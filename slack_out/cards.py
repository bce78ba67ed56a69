"""The cards people decide on: a request's approval card, an extension's, a break-glass grant's review card."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jit_lb.access.policy import (
    HaproxyAclGrant,
    IamPolicyGrant,
    ListenerRuleGrant,
    SecurityGroupGrant,
    Target,
    iam_actions,
)
from jit_lb.access.requests import AccessRequest, Approval, Extension, Status
from slack_out.ids import ActionId, BlockId
from slack_out.limits import (
    MAX_FIELD_TEXT,
    MAX_LINE,
    MAX_NAMED,
    MAX_SECTION_TEXT,
    Blocks,
    Message,
    capped,
    clip,
    context_block,
    escape,
    mrkdwn,
    people,
    plain,
    section,
    typed_blocks,
    when,
)

_OUTCOME = {
    Status.PENDING: ":hourglass_flowing_sand: Waiting for approval",
    Status.APPROVED: ":white_check_mark: Approved",
    Status.GRANTED: ":unlock: Granted",
    Status.REVOKED: ":lock: Ended",
    Status.DENIED: ":no_entry: Denied",
    Status.EXPIRED: ":alarm_clock: Expired without a decision",
    Status.FAILED: ":x: Failed",
    Status.CANCELLED: ":heavy_multiplication_x: Cancelled",
}


def approvers_text(approvals: Sequence[Approval]) -> str:
    """Who approved, each marked when they stepped up with a one-time code: `<@U1> with MFA, <@U2>`."""
    if not approvals:
        return "—"
    shown = [f"<@{a.user}>" + (" with MFA" if a.mfa else "") for a in approvals[:MAX_NAMED]]
    more = f" and {len(approvals) - MAX_NAMED} more" if len(approvals) > MAX_NAMED else ""
    return ", ".join(shown) + more


def _fields(request: AccessRequest) -> dict[str, Any]:
    source = request.cidr or (f"IAM role `{request.role_name}`" if request.role_name else "—")
    fields = [
        f"*Requester*\n<@{request.requester}>" + (" with MFA" if request.requested_with_mfa else ""),
        f"*Target*\n`{request.target}`",
        f"*Duration*\n{request.duration_text}"
        + (f"\nstarting {when(request.starts_at)} (scheduled)" if request.starts_at is not None else ""),
        f"*Source*\n`{source}`" if request.cidr else f"*Source*\n{source}",
        f"*Request*\n`{request.visible_id}`",
        "*Approval*\nnone: break-glass, reviewed afterwards"
        if request.break_glass
        else "*Approval*\nauto: the requester is on call"
        if request.auto_approval is not None
        else f"*Approvals*\n{len(request.approvals)} of {request.approvals_required}",
    ]
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(field, MAX_FIELD_TEXT)} for field in fields]}


def approval_card(
    request: AccessRequest, target: Target | None = None, approvers: Sequence[str] | None = None
) -> Message:
    """The approval card: the request, and either the buttons (pending) or the outcome and who decided; its text
    is the notification (what shows where blocks cannot).

    `approvers`: who may approve it (usergroups expanded, never the requester), named under the buttons while
    it is pending, so that nobody has to ask in a channel whom to ping.

    The reason is shown as typed (plain_text); a failure or cancellation's why, which may be typed too, likewise.
    """
    description = f" — {escape(clip(target.description, MAX_LINE))}" if target and target.description else ""
    blocks: Blocks = [
        section(mrkdwn(f"*Access request* `{request.visible_id}`{description}")),
        _fields(request),
        *typed_blocks("Reason", request.reason),
    ]
    created = to_be_created(request, target)
    if created:
        blocks.append(section(mrkdwn(clip(f"*At the load balancer*\n{created}", MAX_SECTION_TEXT))))
    on_call = on_call_line(request)
    if on_call:
        blocks.append(context_block(on_call))
    if request.status is Status.PENDING:
        blocks.append(_decision_buttons(request))
        if approvers is not None:
            blocks.append(context_block(_who_approves(request, approvers)))
        starts = f" · the window starts {when(request.starts_at)}" if request.starts_at is not None else ""
        blocks.append(
            context_block(f"Expires unanswered {when(request.pending_until)}" + _approved_so_far(request) + starts)
        )
    else:
        blocks.append(outcome_block(outcome_line(request, detail=False)))
        why = _why(request)
        if why:
            blocks.extend(typed_blocks("Why", why))
    text = (
        f"Access request {request.visible_id}: <@{request.requester}> asks for {request.target} "
        f"for {request.duration_text} — {_OUTCOME[request.status]}"
    )
    return Message(text, capped(blocks))


def to_be_created(request: AccessRequest, target: Target | None) -> str | None:
    """What a grant of the request creates at the load balancer, in words, from the target's grant spec; None
    when the target left the policy. Every name comes from the policy or the request, escaped and clipped."""
    if target is None:
        return None
    spec = target.grant
    source = f"`{escape(clip(request.cidr, MAX_LINE))}`" if request.cidr else "the requester's source"
    until = "tagged with the request and its end"
    if isinstance(spec, SecurityGroupGrant):
        ports = ", ".join(str(port) for port in spec.ports[:MAX_PORTS_SHOWN])
        more = f" and {len(spec.ports) - MAX_PORTS_SHOWN} more" if len(spec.ports) > MAX_PORTS_SHOWN else ""
        rules = "an inbound rule" if len(spec.ports) == 1 else f"{len(spec.ports)} inbound rules"
        return (
            f"{rules.capitalize()} on security group `{spec.security_group_id}` ({spec.region}): "
            f"{spec.protocol} port {ports}{more} from {source}, {until}"
        )
    if isinstance(spec, ListenerRuleGrant):
        where = "".join(
            [
                f", host {escape(clip(' '.join(spec.host_headers), MAX_LINE))}" if spec.host_headers else "",
                f", path {escape(clip(' '.join(spec.path_patterns), MAX_LINE))}" if spec.path_patterns else "",
            ]
        )
        low, high = spec.priority_range
        return (
            f"A rule on ALB listener `{_last(spec.listener_arn)}` ({spec.region}) forwarding requests from "
            f"{source}{where} to target group `{_target_group(spec.target_group_arn)}`, at a priority in "
            f"{low} to {high}, {until}"
        )
    if isinstance(spec, IamPolicyGrant):
        describe, scoped = iam_actions(spec.actions)
        role = f"`{escape(clip(request.role_name, MAX_LINE))}`" if request.role_name else "the requester's role"
        balancer = spec.load_balancer_arn.partition(":loadbalancer/")[2]
        return (
            f"An inline policy `{request.id}` on IAM role {role}: {len(scoped)} Elastic Load Balancing "
            f"action(s) on "
            f"load balancer `{escape(balancer)}` (its listeners, rules and target groups) and {len(describe)} "
            "Describe action(s), until the end (AWS's `DateLessThan`)"
            + (", with MFA (`aws:MultiFactorAuthPresent`)" if spec.require_mfa else "")
        )
    if isinstance(spec, HaproxyAclGrant):
        return (
            f"An entry {source} in HAProxy ACL `{escape(clip(spec.acl, MAX_LINE))}` at "
            f"`{escape(clip(spec.runtime_api, MAX_LINE))}`, its lease and end kept by jit-lb in Redis"
        )
    return (
        f"An `allow` line for {source} in `{escape(clip(str(spec.allow_file), MAX_LINE))}`, then NGINX reloaded, "
        "its end kept as a comment on the line"
    )


MAX_PORTS_SHOWN = 20


def _last(arn: str) -> str:
    """The last part of an ARN's path (a listener's id)."""
    return arn.rpartition("/")[2] or arn


def _target_group(arn: str) -> str:
    """A target group's name from its ARN (`…:targetgroup/NAME/ID`)."""
    return arn.partition(":targetgroup/")[2].split("/")[0] or arn


def _who_approves(request: AccessRequest, approvers: Sequence[str]) -> str:
    if not approvers:
        return f"Nobody can approve it: `{request.target}`'s approvers name no one but the requester, or no one found"
    needed = request.approvals_required
    return f"Can approve ({needed} needed): {people(sorted(approvers))}"


def _decision_buttons(request: AccessRequest) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": BlockId.DECISION,
        "elements": [
            {
                "type": "button",
                "action_id": ActionId.APPROVE,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": request.visible_id,
            },
            {
                "type": "button",
                "action_id": ActionId.DENY,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Deny"},
                "value": request.visible_id,
            },
        ],
    }


def _approved_so_far(request: AccessRequest) -> str:
    return f" · approved so far by {approvers_text(request.approvals)}" if request.approvals else ""


def _why(request: AccessRequest) -> str | None:
    """Why a request failed, was cancelled or was denied, as recorded (words of a system, or of a person)."""
    if request.status is Status.DENIED:
        return request.deny_reason
    closed = {Status.FAILED, Status.CANCELLED, Status.EXPIRED}
    return request.failure if request.status in closed and request.failure else None


def on_call_line(request: AccessRequest) -> str:
    """Why the card has no buttons (auto-approved from on-call), or why it still has them; empty when neither."""
    approval = request.auto_approval
    if approval is not None:
        shift = f", shift until {when(approval.shift_end)}" if approval.shift_end else ""
        ends = " · the grant ends with the shift" if approval.end_with_shift and approval.shift_end else ""
        return (
            f":pager: *Auto-approved*: <@{request.requester}> is on call in PagerDuty (schedule "
            f"`{approval.schedule}`, escalation level {approval.escalation_level}{shift}){ends}. "
            f"Approvers can still end it: `/jit revoke {request.visible_id}`"
        )
    if request.not_auto_approved and request.status is Status.PENDING:
        return f":pager: Not auto-approved: {escape(clip(request.not_auto_approved, MAX_LINE))}"
    return ""


def _approved_by(request: AccessRequest) -> str:
    if request.auto_approval is not None:
        return "jit-lb (requester on call)"
    return approvers_text(request.approvals)


def outcome_line(request: AccessRequest, *, detail: bool = True) -> str:
    """One line saying where the request stands and who decided; with `detail`, why it failed (escaped)."""
    status = request.status
    line = _OUTCOME[status]
    if status is Status.REVOKED:
        ended_by = f" by <@{request.ended_by}>" if request.ended_by and request.ended_by != "system" else ""
        line += f" at {when(request.ended_at)} ({request.end_reason}){ended_by} · approved by "
        line += _approved_by(request)
    elif status in {Status.APPROVED, Status.GRANTED}:
        line += f" by {_approved_by(request)}"
        if request.waits_for_start:
            line += f" · starts {when(request.starts_at)}, judged again then"
    elif status is Status.EXPIRED and request.failure:
        line = ":alarm_clock: Expired at its start, nothing applied"
    elif status is Status.DENIED or (status is Status.CANCELLED and request.decided_by not in {None, "system"}):
        line += f" by <@{request.decided_by}>"
    if status is Status.GRANTED:
        line += f" · until {when(request.ends_at)}"
    why = _why(request)
    if detail and why:
        line += f": {escape(clip(why, MAX_LINE))}"
    return line


def extension_card(request: AccessRequest, extension: Extension) -> Message:
    """The approval card of an extension as its state says now: same buttons, same value, its own message; the
    reason as typed."""
    line = (
        f"*Extension of* `{request.visible_id}`: <@{request.requester}> asks for *{extension.duration_text}* more on "
        f"`{request.target}` (now until {when(request.ends_at)})"
    )
    blocks: Blocks = [section(mrkdwn(line)), *typed_blocks("Reason", extension.reason)]
    if extension.outcome == "pending":
        blocks.append(_decision_buttons(request))
        if extension.approvals:
            blocks.append(context_block(f"Approved so far by {people(extension.approvers)}"))
    elif extension.outcome == "approved":
        blocks.append(
            outcome_block(
                f":white_check_mark: Extended by {people(extension.approvers)} · now until {when(request.ends_at)}"
            )
        )
    elif extension.outcome == "refused":
        blocks.append(outcome_block(f":no_entry: Approved, then refused under the policy in force: {extension.why}"))
    else:
        blocks.append(outcome_block(f":no_entry: Extension denied by <@{extension.decided_by}>"))
    text = (
        f"Extension of {request.visible_id}: <@{request.requester}> asks for {extension.duration_text} more on "
        f"{request.target} — {extension.outcome}"
    )
    return Message(text, blocks)


def shown_extension(request: AccessRequest) -> Extension | None:
    """The extension a card shows for the request: its pending one, else its last decided one."""
    return request.extension or (request.extensions[-1] if request.extensions else None)


def extension_of_several(parts: Sequence[AccessRequest]) -> Message:
    """The one extension card of the targets of a request of several (docs/approvals.md): the extra time and reason
    once, each target's end and where its extension stands, and the buttons (the request's id) while any waits."""
    first = parts[0]
    extension = shown_extension(first)
    assert extension is not None, "a card of extensions shows parts that have one"
    names = ", ".join(f"`{part.target}`" for part in parts)
    line = (
        f"*Extension of* `{first.visible_id}`: <@{first.requester}> asks for *{extension.duration_text}* more on "
        f"{names}"
    )
    blocks: Blocks = [section(mrkdwn(line)), *typed_blocks("Reason", extension.reason)]
    for part in parts:
        blocks.append(section(mrkdwn(clip(f"*`{part.target}`*: " + _extension_state(part), MAX_SECTION_TEXT))))
    if any(part.extension is not None for part in parts):
        blocks.append(_decision_buttons(first))
    text = f"Extension of {first.visible_id}: <@{first.requester}> asks for {extension.duration_text} more on " + (
        ", ".join(part.target for part in parts)
    )
    return Message(clip(text, MAX_LINE * 2), capped(blocks))


def _extension_state(part: AccessRequest) -> str:
    extension = shown_extension(part)
    if extension is None:
        return outcome_line(part)
    if extension.outcome == "pending":
        so_far = f" · approved so far by {people(extension.approvers)}" if extension.approvals else ""
        return f":hourglass_flowing_sand: waiting, now until {when(part.ends_at)}{so_far}"
    if extension.outcome == "approved":
        return f":white_check_mark: Extended by {people(extension.approvers)} · now until {when(part.ends_at)}"
    if extension.outcome == "refused":
        return f":no_entry: Approved, then refused under the policy in force: {extension.why}"
    return f":no_entry: Extension denied by <@{extension.decided_by}>"


def outcome_block(text: str) -> dict[str, Any]:
    return section(mrkdwn(text), BlockId.DECISION)


def breakglass_card(request: AccessRequest, approvers: Sequence[str], again: bool = False) -> Message:
    """The review card of a break-glass grant: who took what and why, its approvers mentioned, and the two buttons."""
    still = " (still unreviewed)" if again else ""
    asked = f" {people(sorted(approvers))}: please review it." if approvers else ""
    head = (
        f":rotating_light: *Break-glass{still}* `{request.visible_id}`: <@{request.requester}> took "
        f"`{request.target}` for "
        f"{request.duration_text} without approval.{asked}"
    )
    blocks: Blocks = [section(mrkdwn(head)), _fields(request), *typed_blocks("Reason", request.reason)]
    if request.review is None:
        blocks.append(
            {
                "type": "actions",
                "block_id": BlockId.REVIEW,
                "elements": [
                    {
                        "type": "button",
                        "action_id": ActionId.REVIEW_OK,
                        "style": "primary",
                        "text": plain("Acknowledge"),
                        "value": request.visible_id,
                    },
                    {
                        "type": "button",
                        "action_id": ActionId.REVIEW_FLAG,
                        "style": "danger",
                        "text": plain("Flag"),
                        "value": request.visible_id,
                    },
                ],
            }
        )
    else:
        verdict = (
            ":white_check_mark: Acknowledged"
            if request.review == "acknowledged"
            else ":triangular_flag_on_post: Flagged"
        )
        blocks.append(outcome_block(f"{verdict} by <@{request.reviewed_by}> · {outcome_line(request, detail=False)}"))
    text = f"Break-glass {request.visible_id}: <@{request.requester}> took {request.target} for {request.duration_text}"
    return Message(text, capped(blocks))


def group_card(
    parts: Sequence[AccessRequest],
    targets: Mapping[str, Target | None],
    approvers: Mapping[str, Sequence[str]] | None = None,
) -> Message:
    """The one approval card of a request of several targets (docs/approvals.md): the request once, then each target
    with what its grant creates and where it stands; the buttons (the request's id) while any target is pending.

    `targets` maps each part's target name to its policy entry; `approvers` each part's id to who may approve it.
    """
    first = parts[0]
    names = ", ".join(f"`{part.target}`" for part in parts)
    fields = [
        f"*Requester*\n<@{first.requester}>" + (" with MFA" if first.requested_with_mfa else ""),
        f"*Targets*\n{names}",
        f"*Duration*\n{first.duration_text}"
        + (f"\nstarting {when(first.starts_at)} (scheduled)" if first.starts_at is not None else ""),
        f"*Request*\n`{first.visible_id}`",
    ]
    blocks: Blocks = [
        section(mrkdwn(f"*Access request* `{first.visible_id}` — {len(parts)} targets, each approved on its own")),
        {"type": "section", "fields": [mrkdwn(clip(field, MAX_FIELD_TEXT)) for field in fields]},
        *typed_blocks("Reason", first.reason),
    ]
    for part in parts:
        blocks.append(_part_block(part, targets.get(part.target), (approvers or {}).get(part.id)))
        why = _why(part) if part.status is not Status.PENDING else None
        if why:
            blocks.extend(typed_blocks(f"Why (`{part.target}`)", why))
    pending = [part for part in parts if part.status is Status.PENDING]
    if pending:
        blocks.append(_decision_buttons(first))
        starts = f" · the window starts {when(first.starts_at)}" if first.starts_at is not None else ""
        blocks.append(context_block(f"Expires unanswered {when(first.pending_until)}{starts}"))
    text = (
        f"Access request {first.visible_id}: <@{first.requester}> asks for "
        + ", ".join(f"{part.target} ({_OUTCOME[part.status].partition(' ')[2]})" for part in parts)
        + f" for {first.duration_text}"
    )
    return Message(clip(text, MAX_LINE * 2), capped(blocks))


def _part_block(part: AccessRequest, target: Target | None, approvers: Sequence[str] | None) -> dict[str, Any]:
    """One target of a group card: its description, where it stands, and what its grant creates."""
    description = f" — {escape(clip(target.description, MAX_LINE))}" if target and target.description else ""
    lines = [f"*`{part.target}`*{description}"]
    if part.status is Status.PENDING:
        lines.append(
            f":hourglass_flowing_sand: {len(part.approvals)} of {part.approvals_required} approval(s)"
            + _approved_so_far(part)
        )
        if approvers is not None:
            lines.append(_who_approves(part, approvers))
    else:
        lines.append(outcome_line(part, detail=False))
    on_call = on_call_line(part)
    if on_call:
        lines.append(on_call)
    created = to_be_created(part, target)
    if created:
        lines.append(f"*At the load balancer*: {created}")
    return section(mrkdwn(clip("\n".join(lines), MAX_SECTION_TEXT)))


def request_card(request: AccessRequest, target: Target | None, approvers: Sequence[str] | None = None) -> Message:
    """A request's card as its state says now: the break-glass review card, or the approval card."""
    if request.break_glass:
        return breakglass_card(request, [])
    return approval_card(request, target, approvers)
