"""Pure Block Kit builders: Slack messages as functions of a request's state, tested as plain data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.messages.ids import ActionId, BlockId
from jit_lb.access.durations import format_duration
from jit_lb.access.policy import Policy, Target
from jit_lb.access.requests import AccessRequest, Extension, Status

Blocks = list[dict[str, Any]]

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


def when(moment: datetime | None) -> str:
    """A time as Slack shows it to each reader in their own zone, with a UTC fallback."""
    if moment is None:
        return "—"
    fallback = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def _who(users: list[str]) -> str:
    return ", ".join(f"<@{user}>" for user in users) or "—"


def _fields(request: AccessRequest) -> dict[str, Any]:
    source = request.cidr or (f"IAM role `{request.role_name}`" if request.role_name else "—")
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": f"*Requester*\n<@{request.requester}>"},
            {"type": "mrkdwn", "text": f"*Target*\n`{request.target}`"},
            {"type": "mrkdwn", "text": f"*Duration*\n{request.duration_text}"},
            {"type": "mrkdwn", "text": f"*Source*\n`{source}`" if request.cidr else f"*Source*\n{source}"},
            {"type": "mrkdwn", "text": f"*Request*\n`{request.id}`"},
            {"type": "mrkdwn", "text": f"*Approvals*\n{len(request.approvals)} of {request.approvals_required}"},
        ],
    }


def card_text(request: AccessRequest) -> str:
    """The notification text of the approval card (what shows where blocks cannot)."""
    return (
        f"Access request {request.id}: <@{request.requester}> asks for {request.target} "
        f"for {request.duration_text} — {_OUTCOME[request.status]}"
    )


def approval_card(request: AccessRequest, target: Target | None = None) -> Blocks:
    """The approval card: the request, and either the buttons (pending) or the outcome and who decided."""
    title = f"*Access request* `{request.id}`" + (f" — {target.description}" if target and target.description else "")
    blocks: Blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": title}},
        _fields(request),
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n>{_quote(request.reason)}"}},
    ]
    if request.status is Status.PENDING:
        blocks.append(_decision_buttons(request))
        blocks.append(_context(f"Expires unanswered {when(request.pending_until)}" + _approved_so_far(request)))
    else:
        blocks.append(_outcome(outcome_line(request)))
    return blocks


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
                "value": request.id,
            },
            {
                "type": "button",
                "action_id": ActionId.DENY,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Deny"},
                "value": request.id,
            },
        ],
    }


def _approved_so_far(request: AccessRequest) -> str:
    return f" · approved so far by {_who(request.approvers)}" if request.approvals else ""


def outcome_line(request: AccessRequest) -> str:
    """One line saying where the request stands and who decided."""
    status = request.status
    line = _OUTCOME[status]
    if status is Status.REVOKED:
        ended_by = f" by <@{request.ended_by}>" if request.ended_by and request.ended_by != "system" else ""
        line += f" at {when(request.ended_at)} ({request.end_reason}){ended_by} · approved by {_who(request.approvers)}"
    elif status in {Status.APPROVED, Status.GRANTED}:
        line += f" by {_who(request.approvers)}"
    elif status is Status.DENIED:
        line += f" by <@{request.decided_by}>"
    if status is Status.GRANTED:
        line += f" · until {when(request.ends_at)}"
    if status in {Status.FAILED, Status.CANCELLED} and request.failure:
        line += f": {request.failure}"
    return line


def thread_parent_text(request: AccessRequest) -> str:
    """The audit channel's parent message for one request; its events go in the thread below."""
    return f"Audit trail of {request.id}: <@{request.requester}> → `{request.target}` for {request.duration_text}"


def created_text(request: AccessRequest, channel: str) -> str:
    return (
        f":memo: Requested by <@{request.requester}>: `{request.target}` for {request.duration_text} "
        f"from `{request.cidr or request.role_name}`. Reason: {request.reason}. Approval card in <#{channel}>."
    )


def submitted_reply(request: AccessRequest, channel: str) -> str:
    """What the requester sees right after asking."""
    return (
        f"Request `{request.id}` for `{request.target}` ({request.duration_text}) is waiting for approval in "
        f"<#{channel}>. It expires unanswered {when(request.pending_until)}."
    )


def unavailable_text() -> str:
    """The answer when Redis cannot be reached: nothing was done."""
    return (
        "jit-lb cannot reach its state store (Redis) right now, so nothing was requested or changed. "
        "Try again in a minute; if it persists, tell your platform team."
    )


def revoking_reply(request: AccessRequest) -> str:
    return f"Revoking `{request.id}` on `{request.target}` now; the thread will say when it is done."


def extension_submitted_reply(request: AccessRequest, channel: str) -> str:
    more = request.extension.duration_text if request.extension else "more time"
    return f"Asked to extend `{request.id}` by {more}; waiting for approval in <#{channel}>."


def approved_dm_text(request: AccessRequest) -> str:
    """The requester's DM once every approval a request needs is in."""
    return f":white_check_mark: `{request.id}` was approved by {_who(request.approvers)}; access is being granted."


def approval_text(request: AccessRequest, who: str) -> str:
    if request.status is Status.PENDING:
        return (
            f":ballot_box_with_check: <@{who}> approved ({len(request.approvals)} of "
            f"{request.approvals_required}); waiting for another approver."
        )
    return f":white_check_mark: <@{who}> approved `{request.id}`; granting access now."


def denied_text(request: AccessRequest) -> str:
    return f":no_entry: <@{request.decided_by}> denied `{request.id}` (`{request.target}`)."


def expired_text(request: AccessRequest) -> str:
    return f":alarm_clock: `{request.id}` expired: nobody decided within the approval window."


def granted_text(request: AccessRequest, objects: list[str], verified: bool) -> str:
    check = "verified at the load balancer" if verified else ":warning: NOT verified at the load balancer"
    listed = "\n".join(f"• {obj}" for obj in objects) or "• (access already present; nothing new created)"
    return (
        f":unlock: Access granted to <@{request.requester}> on `{request.target}` until {when(request.ends_at)} "
        f"({check}):\n{listed}"
    )


def failed_text(request: AccessRequest) -> str:
    return (
        f":x: Could not grant `{request.id}` on `{request.target}`: {request.failure}. "
        "Nothing was left at the load balancer."
    )


def revoke_failed_text(request: AccessRequest, error: str, approvers: list[str]) -> str:
    return (
        f":rotating_light: Revoking `{request.id}` on `{request.target}` failed: {error}. "
        f"It is retried, and the sweep keeps trying. {_who(approvers)}"
    )


def summary_blocks(request: AccessRequest) -> Blocks:
    """The last reply of a request's thread: what was granted, to whom, for how long, and how it ended."""
    lasted = request.lasted()
    lines = [
        f"*Summary of `{request.id}`*",
        f"Requester: <@{request.requester}>  ·  Approvers: {_who(request.approvers)}",
        f"Target: `{request.target}`  ·  Reason: {request.reason}",
        f"Granted at: {when(request.granted_at)}  ·  Ended at: {when(request.ended_at)}",
        f"Lasted: {format_duration(lasted) if lasted is not None else '—'} of {request.duration_text} requested",
        f"How it ended: {request.end_reason}"
        + (f" by <@{request.ended_by}>" if request.ended_by not in {None, "system"} else ""),
        "Created: " + ("; ".join(request.created_objects) or "—"),
        "Removed: "
        + ("; ".join(request.removed_objects) or "—")
        + ("" if request.verified else "  :warning: removal NOT verified"),
    ]
    return [{"type": "section", "block_id": BlockId.SUMMARY, "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]


def summary_text(request: AccessRequest) -> str:
    return f":lock: Access on `{request.target}` ended ({request.end_reason}) for `{request.id}`."


def targets_text(policy: Policy, user: str) -> str:
    targets = policy.targets_for(user)
    if not targets:
        return "You may not request any target. Ask your platform team to add you to the policy."
    lines = ["*Targets you may request:*"]
    for name, target in sorted(targets.items()):
        required = f", {target.approvals_required} approvals" if target.approvals_required > 1 else ""
        lines.append(
            f"• `{name}` {target.description} — default {format_duration(target.default_duration)}, "
            f"{format_duration(target.min_duration)} to {format_duration(target.max_duration)}{required}; "
            f"approvers {_who(target.approvers)}"
        )
    return "\n".join(lines)


def list_text(requests: list[AccessRequest]) -> str:
    if not requests:
        return "No pending or active requests that you can see."
    lines = ["*Pending and active requests:*"]
    for request in requests:
        if request.status is Status.GRANTED:
            state = f"granted until {when(request.ends_at)}"
        elif request.status is Status.PENDING:
            approvals = f"{len(request.approvals)} of {request.approvals_required}"
            state = f"pending ({approvals}), expires {when(request.pending_until)}"
        else:
            state = str(request.status)
        lines.append(
            f"• `{request.id}` `{request.target}` for <@{request.requester}> ({request.duration_text}): {state}"
        )
    return "\n".join(lines)


def extension_card_text(request: AccessRequest, extension: Extension) -> str:
    return (
        f"Extension of {request.id}: <@{request.requester}> asks for {extension.duration_text} more on "
        f"{request.target} — {extension.outcome}"
    )


def extension_card(request: AccessRequest, extension: Extension) -> Blocks:
    """The approval card of an extension: same buttons, same value, its own message."""
    lines = (
        f"*Extension of* `{request.id}`: <@{request.requester}> asks for *{extension.duration_text}* more on "
        f"`{request.target}` (now until {when(request.ends_at)})\n*Reason*\n>{_quote(extension.reason)}"
    )
    blocks: Blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": lines}}]
    if extension.outcome == "pending":
        blocks.append(_decision_buttons(request))
        if extension.approvals:
            blocks.append(_context(f"Approved so far by {_who(extension.approvers)}"))
    elif extension.outcome == "approved":
        blocks.append(
            _outcome(f":white_check_mark: Extended by {_who(extension.approvers)} · now until {when(request.ends_at)}")
        )
    else:
        blocks.append(_outcome(f":no_entry: Extension denied by <@{extension.decided_by}>"))
    return blocks


def _outcome(text: str) -> dict[str, Any]:
    return {"type": "section", "block_id": BlockId.DECISION, "text": {"type": "mrkdwn", "text": text}}


def extension_requested_text(request: AccessRequest) -> str:
    extension = request.extension
    more = extension.duration_text if extension else "more time"
    reason = extension.reason if extension else ""
    return f":hourglass: <@{request.requester}> asked to extend `{request.id}` by {more}. Reason: {reason}"


def extension_approval_text(request: AccessRequest, who: str, done: bool) -> str:
    if done:
        return (
            f":white_check_mark: <@{who}> approved the extension of `{request.id}`; "
            f"moving its end to {when(request.ends_at)}."
        )
    return f":ballot_box_with_check: <@{who}> approved the extension of `{request.id}`; waiting for another approver."


def extension_denied_text(request: AccessRequest, who: str) -> str:
    return f":no_entry: <@{who}> denied the extension of `{request.id}`; it still ends {when(request.ends_at)}."


def extended_text(request: AccessRequest, verified: bool) -> str:
    check = "markers at the load balancer moved and verified" if verified else ":warning: markers NOT verified"
    return f":hourglass_flowing_sand: `{request.id}` on `{request.target}` now ends {when(request.ends_at)} ({check})."


def warning_text(request: AccessRequest, minutes: int) -> str:
    return (
        f":alarm_clock: Your access `{request.id}` on `{request.target}` ends in about {minutes} minutes "
        f"({when(request.ends_at)}). Need more? `/jit extend {request.id} 30m <reason>`"
    )


def help_text(unknown: str | None = None) -> str:
    from jit_lb.access.commands import USAGE

    prefix = f"`{unknown}` is not a `/jit` command.\n" if unknown else ""
    return prefix + USAGE


def refusal_text(reason: str) -> str:
    return f":no_entry_sign: Refused: {reason}"


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _quote(text: str) -> str:
    return text.replace("\n", "\n>")
