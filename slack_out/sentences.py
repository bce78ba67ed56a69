"""The plain sentences jit-lb says: replies to the person who asked, audit-thread notes, DMs and notices."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from jit_lb.access.durations import format_duration
from jit_lb.access.errors import JitError, StoreUnavailableError
from jit_lb.access.policy import Target
from jit_lb.access.requests import AccessRequest, Status
from slack_out.ids import ActionId, BlockId
from slack_out.limits import (
    MAX_BLOCKS,
    MAX_LINE,
    MAX_SECTION_TEXT,
    MAX_TEXT,
    Message,
    bounded,
    capped,
    clip,
    escape,
    mrkdwn,
    people,
    section,
    typed_blocks,
    when,
)


def thread_parent_text(request: AccessRequest) -> str:
    """The audit channel's parent message for one request; its events go in the thread below."""
    names = ", ".join(f"`{name}`" for name in request.group_targets or (request.target,))
    return f"Audit trail of {request.visible_id}: <@{request.requester}> → {names} for {request.duration_text}"


def created_message(request: AccessRequest, channel: str) -> Message:
    """The audit thread's first reply: who asked for what from where, and the reason (escaped in the notification
    text, as typed in the blocks)."""
    line = (
        f":memo: Requested by <@{request.requester}>: `{request.target}` for {request.duration_text} "
        f"from `{request.cidr or request.role_name}`."
    )
    where = f"Approval card in <#{channel}>."
    reason = escape(clip(request.reason, MAX_SECTION_TEXT))
    return Message(
        f"{line} Reason: {reason}. {where}",
        [section(mrkdwn(f"{line} {where}")), *typed_blocks("Reason", request.reason)],
    )


def created_several_message(parts: list[AccessRequest], channels: list[str]) -> Message:
    """The audit thread's first reply for a request of several targets: who asked for what, the reason as typed."""
    first = parts[0]
    where = ", ".join(f"<#{channel}>" for channel in channels)
    listed = "; ".join(f"`{part.target}` from `{part.cidr or part.role_name}`" for part in parts)
    line = (
        f":memo: Requested by <@{first.requester}>: {listed}, for {first.duration_text}. "
        f"Approval card(s) in {where}; each target is granted once its own approvals are in."
    )
    text = f"{line} Reason: {escape(clip(first.reason, MAX_SECTION_TEXT))}."
    return Message(
        clip(text, MAX_TEXT),
        capped([section(mrkdwn(clip(line, MAX_SECTION_TEXT))), *typed_blocks("Reason", first.reason)]),
    )


def submitted_reply(request: AccessRequest, channel: str) -> str:
    """What the requester sees right after asking."""
    starts = f", starting {when(request.starts_at)}," if request.starts_at is not None else ""
    return (
        f"Request `{request.visible_id}` for `{request.target}` ({request.duration_text}{starts}) is waiting "
        f"for approval in "
        f"<#{channel}>. It expires unanswered {when(request.pending_until)}."
    )


def submitted_several_reply(parts: list[AccessRequest], channels: list[str]) -> str:
    """What the requester sees right after asking for several targets: one id, each target's approvals."""
    first = parts[0]
    starts = f", starting {when(first.starts_at)}," if first.starts_at is not None else ""
    where = ", ".join(f"<#{channel}>" for channel in channels)
    listed = ", ".join(f"`{part.target}` ({part.approvals_required} approval(s))" for part in parts)
    return (
        f"Request `{first.visible_id}` for {listed} ({first.duration_text}{starts}) is waiting for approval in "
        f"{where}; each target is granted once its own approvals are in. It expires unanswered "
        f"{when(first.pending_until)}."
    )


def _ref(request: AccessRequest) -> str:
    """The request's id as people see it, and its target where one request has several targets."""
    return f"`{request.visible_id}`{_target_of(request)}"


def _target_of(request: AccessRequest) -> str:
    return f" (`{request.target}`)" if request.group else ""


def unavailable_text() -> str:
    """The answer when Redis cannot be reached: nothing was done."""
    return (
        "jit-lb is unavailable: it cannot reach its state store (Redis) right now, so nothing was requested or "
        "changed. Try again in a minute; if it persists, tell your platform team."
    )


def revoking_reply(request: AccessRequest) -> str:
    return f"Revoking `{request.visible_id}` on `{request.target}` now; the thread will say when it is done."


def extension_submitted_reply(request: AccessRequest, channel: str) -> str:
    more = request.extension.duration_text if request.extension else "more time"
    return f"Asked to extend `{request.visible_id}` by {more}; waiting for approval in <#{channel}>."


def approved_dm_text(request: AccessRequest) -> str:
    """The requester's DM once every approval a request needs is in."""
    if request.auto_approval is not None:
        return (
            f":white_check_mark: {_ref(request)} was approved because you are on call "
            f"in PagerDuty (schedule "
            f"`{request.auto_approval.schedule}`); access is being granted."
        )
    if request.starts_at is not None:
        return (
            f":white_check_mark: {_ref(request)} was approved by {people(request.approvers)}; "
            "it is granted at its "
            f"start, {when(request.starts_at)}, if it still may be then (`/jit cancel {request.visible_id}` "
            f"withdraws it)."
        )
    return f":white_check_mark: {_ref(request)} was approved by {people(request.approvers)}; access is being granted."


def approval_text(request: AccessRequest, who: str) -> str:
    """The thread's note of `who`'s approval, by its place among the request's approvals (so that it reads the same
    whenever a worker posts it): counted and waiting for another, or the one that completed them."""
    counted = request.approval_place(who)
    if counted < request.approvals_required:
        return (
            f":ballot_box_with_check: <@{who}> approved{_target_of(request)} ({counted} of "
            f"{request.approvals_required}); waiting for another approver."
        )
    return f":white_check_mark: <@{who}> approved {_ref(request)}; granting access now."


def denied_message(request: AccessRequest) -> Message:
    """The denial in the thread and the requester's DM: its reason escaped in the text, as typed in the blocks."""
    head = f":no_entry: <@{request.decided_by}> denied `{request.visible_id}` (`{request.target}`)."
    if not request.deny_reason:
        return Message(head, capped([section(mrkdwn(head))]))
    return Message(
        f"{head} Reason: {escape(clip(request.deny_reason, MAX_LINE))}",
        capped([section(mrkdwn(head)), *typed_blocks("Reason", request.deny_reason)]),
    )


def again_message(request: AccessRequest, message: Message) -> Message:
    """The requester's copy of an ended, denied or expired request's message, with a Request again button under it
    (a message of text alone shows its text as a section above the button).

    The button's value is the request id; the web opens the request modal filled in from it, for its requester alone.
    """
    button = {
        "type": "actions",
        "block_id": BlockId.REREQUEST,
        "elements": [
            {
                "type": "button",
                "action_id": ActionId.REREQUEST,
                "text": {"type": "plain_text", "text": "Request again"},
                "value": request.visible_id,
            }
        ],
    }
    kept = capped(message.blocks or [section(mrkdwn(clip(message.text, MAX_SECTION_TEXT)))])
    return Message(message.text, [*(kept if len(kept) < MAX_BLOCKS else kept[: MAX_BLOCKS - 1]), button])


def cancelled_text(request: AccessRequest) -> str:
    if request.decided_by in {None, "system"}:
        why = f": {escape(clip(request.failure, MAX_LINE))}" if request.failure else ""
        return f":wastebasket: `{request.visible_id}` (`{request.target}`) was cancelled{why}."
    return f":wastebasket: <@{request.decided_by}> withdrew `{request.visible_id}` (`{request.target}`)."


def never_recorded_message(parts: list[AccessRequest]) -> Message:
    """The requester's DM of a new request a worker closed because its creation was never recorded (its web stopped,
    or a Redis failover lost its recording): its id and every target, nothing granted, and how to ask again (the
    caller adds Request again under it)."""
    first = parts[0]
    names = ", ".join(f"`{part.target}`" for part in parts)
    text = (
        f":warning: Your request `{first.visible_id}` for {names} ({first.duration_text}) was closed: jit-lb could not "
        "record its creation, so it could never be approved and nothing was granted. Request it again."
    )
    return Message(clip(text, MAX_TEXT), [section(mrkdwn(clip(text, MAX_SECTION_TEXT)))])


def expired_text(request: AccessRequest) -> str:
    if request.failure:
        why = escape(clip(request.failure, MAX_LINE))
        return (
            f":alarm_clock: `{request.visible_id}` (`{request.target}`) expired at its start and nothing was applied: "
            f"{why}"
        )
    return f":alarm_clock: {_ref(request)} expired: nobody decided within the approval window."


def granted_text(request: AccessRequest, objects: list[str], verified: bool) -> str:
    check = "verified at the load balancer" if verified else ":warning: NOT verified at the load balancer"
    head = (
        f":unlock: Access granted to <@{request.requester}> on `{request.target}` until {when(request.ends_at)} "
        f"({check}):"
    )
    listed = [f"• `{escape(clip(obj, MAX_LINE))}`" for obj in objects]
    return bounded([head, *(listed or ["• (access already present; nothing new created)"])])


def failed_text(request: AccessRequest) -> str:
    return (
        f":x: Could not grant `{request.visible_id}` on `{request.target}`: "
        f"{escape(clip(str(request.failure), MAX_LINE))}. "
        "Nothing was left at the load balancer."
    )


def revoke_failed_text(request: AccessRequest, error: str, approvers: list[str]) -> str:
    return (
        f":rotating_light: Revoking `{request.visible_id}` on `{request.target}` failed: "
        f"{escape(clip(error, MAX_LINE))}. "
        f"It is retried, and the sweep keeps trying. {people(approvers)}"
    )


def targets_text(targets: dict[str, Target]) -> str:
    """`/jit targets`: the targets a person may request, with their limits."""
    if not targets:
        return "You may not request any target. Ask your platform team to add you to the policy."
    lines = ["*Targets you may request:*"]
    for name, target in sorted(targets.items()):
        required = f", {target.approvals_required} approvals" if target.approvals_required > 1 else ""
        lines.append(
            f"• `{name}` {escape(clip(target.description, MAX_LINE))} — "
            f"default {format_duration(target.default_duration)}, "
            f"{format_duration(target.min_duration)} to {format_duration(target.max_duration)}{required}; "
            f"approvers {people(target.approvers)}"
        )
    return "\n".join(lines)


def list_text(requests: list[AccessRequest], more: int = 0) -> str:
    """`/jit list`: a line a request, and how many more there are past the ones shown."""
    if not requests:
        return "No pending or active requests that you can see."
    lines = ["*Pending and active requests:*"]
    for request in requests:
        if request.status is Status.GRANTED:
            state = f"granted until {when(request.ends_at)}"
        elif request.status is Status.PENDING:
            approvals = f"{len(request.approvals)} of {request.approvals_required}"
            state = f"pending ({approvals}), expires {when(request.pending_until)}"
        elif request.waits_for_start:
            state = "approved, scheduled"
        else:
            state = str(request.status)
        if request.starts_at is not None and request.status in {Status.PENDING, Status.APPROVED}:
            state += f", starts {when(request.starts_at)}"
        lines.append(
            f"• `{request.visible_id}` `{request.target}` for <@{request.requester}> ({request.duration_text}): {state}"
        )
    if more > 0:
        lines.append(f"… and {more} more not shown")
    return "\n".join(lines)


def extension_requested_message(request: AccessRequest) -> Message:
    """The thread's note of an extension request: its reason escaped in the text, as typed in the blocks."""
    extension = request.extension
    more = extension.duration_text if extension else "more time"
    line = f":hourglass: <@{request.requester}> asked to extend `{request.visible_id}` by {more}."
    typed = extension.reason if extension else ""
    return Message(
        f"{line} Reason: {escape(clip(typed, MAX_SECTION_TEXT))}",
        [section(mrkdwn(line)), *typed_blocks("Reason", typed)],
    )


def extension_approval_text(request: AccessRequest, who: str, done: bool) -> str:
    if done:
        return (
            f":white_check_mark: <@{who}> approved the extension of {_ref(request)}; "
            f"moving its end to {when(request.ends_at)}."
        )
    return f":ballot_box_with_check: <@{who}> approved the extension of {_ref(request)}; waiting for another approver."


def extension_denied_text(request: AccessRequest, who: str) -> str:
    return f":no_entry: <@{who}> denied the extension of {_ref(request)}; it still ends {when(request.ends_at)}."


def extended_text(request: AccessRequest, verified: bool) -> str:
    check = "markers at the load balancer moved and verified" if verified else ":warning: markers NOT verified"
    return (
        f":hourglass_flowing_sand: `{request.visible_id}` on `{request.target}` now ends {when(request.ends_at)} "
        f"({check})."
    )


def extension_refused_text(request: AccessRequest, why: str) -> str:
    what = f"The extension of `{request.visible_id}` on `{request.target}`"
    return f":no_entry: {what} was approved but not applied: {why}. It still ends {when(request.ends_at)}."


def warning_text(request: AccessRequest, minutes: int) -> str:
    return (
        f":alarm_clock: Your access `{request.visible_id}` on `{request.target}` ends in about {minutes} minutes "
        f"({when(request.ends_at)}). Need more? `/jit extend {request.visible_id} 30m <reason>`"
    )


def help_text(unknown: str | None = None) -> str:
    from jit_lb.access.commands import USAGE

    prefix = f"`{unknown}` is not a `/jit` command.\n" if unknown else ""
    return prefix + USAGE


def refusal_text(reason: str) -> str:
    return f":no_entry_sign: Refused: {reason}"


def error_reply(err: JitError, *, bare: bool = False) -> str:
    """What the person is told of any domain error: the one place the error tree (jit_lb/access/errors.py) becomes
    words. Redis away is said in jit-lb's own words; any other error's message is the reason. `bare`: the sentence
    alone, as a form shows it beside its field."""
    if isinstance(err, StoreUnavailableError):
        return unavailable_text()
    return str(err) if bare else refusal_text(str(err))


def mfa_enrolment_text(uri: str, within: timedelta) -> str:
    """The enrolment DM: the `otpauth://` URI (its QR code follows as an image); deleted once it has served."""
    return (
        ":closed_lock_with_key: Step-up MFA for jit-lb: scan the QR code below with your authenticator app "
        f"(or add this key by hand: `{uri}`), then type the app's first code in the form I opened, "
        f"within {format_duration(within)}. This message and the QR code are deleted once you confirm (or when "
        "that time is up, which cancels the enrolment), so that nobody reading your DMs later finds the secret. "
        "If you lose the app, an admin resets your enrolment."
    )


def mfa_enrolled_post(user: str) -> str:
    return (
        f":key: <@{user}> enrolled an authenticator for step-up MFA. If that was not them, an admin should "
        "`/jit mfa reset` it: someone holding their Slack session may have enrolled their own."
    )


def mfa_operator_reset_post_text(user: str, why: str) -> str:
    return (
        f":key: An operator reset <@{user}>'s step-up MFA enrolment from the command line "
        f"(`python -m bot mfa reset`): {escape(clip(why, 300))}"
    )


def mfa_reset_dm_text(admin: str) -> str:
    who = "An operator" if admin == "operator" else f"<@{admin}>"
    return (
        f":warning: {who} reset your step-up MFA enrolment: your authenticator no longer works for jit-lb, and "
        "`/jit mfa enroll` sets up a new one. If you did not ask for this, tell your security team."
    )


def mfa_reset_post_text(admin: str, user: str, existed: bool) -> str:
    done = "reset" if existed else "reset (there was none)"
    return f":key: <@{admin}> {done} <@{user}>'s step-up MFA enrolment, with a one-time code of their own."


def mfa_cancelled_text(within: timedelta) -> str:
    return (
        f":hourglass: Your step-up MFA enrolment was not confirmed within {format_duration(within)}: it is cancelled, "
        "its secret destroyed and its QR code deleted. `/jit mfa enroll` starts again."
    )


def enrolled_text() -> str:
    return ":white_check_mark: Enrolled: jit-lb will ask for a code from your app when a target requires one."


def breakglass_reply(request: AccessRequest) -> str:
    return (
        f":rotating_light: Break-glass `{request.visible_id}` on `{request.target}` for "
        f"{request.duration_text}: being applied "
        "now, without approval. The approvers are told and will review it."
    )


def review_text(request: AccessRequest) -> str:
    verdict = "acknowledged" if request.review == "acknowledged" else "flagged"
    return f":mag: <@{request.reviewed_by}> {verdict} break-glass `{request.visible_id}` on `{request.target}`."


def flagged_dm_text(request: AccessRequest) -> str:
    return (
        f":triangular_flag_on_post: <@{request.reviewed_by}> flagged break-glass `{request.visible_id}`: "
        f"<@{request.requester}> took `{request.target}` for {request.duration_text}. "
        f"`/jit revoke {request.visible_id}` ends it if it still runs."
    )


def lockdown_started_text(user: str, reason: str) -> str:
    return (
        f":lock: Lockdown on, by <@{user}>: {escape(clip(reason, MAX_LINE))}. Every grant is being ended and every "
        "pending request cancelled; new requests and break-glass are refused until `/jit lockdown off`."
    )


def lockdown_ended_text(user: str, ended: Any) -> str:
    return f":unlock: Lockdown lifted by <@{user}> (it was turned on by <@{ended.by}> {when(ended.at)})."


def lockdown_status_text(lockdown: Any) -> str:
    if lockdown is None:
        return "No lockdown: requests are open."
    return (
        f":lock: Lockdown on since {when(lockdown.at)}, by <@{lockdown.by}>: {escape(clip(lockdown.reason, MAX_LINE))}"
    )
