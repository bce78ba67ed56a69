"""Pure Block Kit builders: Slack messages as functions of a request's state, tested as plain data."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.messages.ids import ActionId, BlockId
from jit_lb.access.durations import format_duration
from jit_lb.access.policy import Target
from jit_lb.access.requests import AccessRequest, Approval, Change, Extension, Status, Use

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

# Slack's Block Kit limits: past any one of them Slack refuses the whole message (invalid_blocks).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT = 4000  # a message's own text: Slack takes 40,000 but advises 4,000, and ours are notices
MAX_TYPED_SECTIONS = 2  # typed text past two sections (6,000 characters) is cut, saying by how much
MAX_LISTED = 100  # objects a summary lists before "… and N more"
MAX_NAMED = 20  # people a line names before "and N more"
_MAX_LINE = 300  # one listed object, or a policy's description
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def escape(text: str) -> str:
    """Text shown as typed inside mrkdwn or a notification: Slack's escaping, so it mentions and links nobody."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """`text` within `limit` characters, ending in "…" when cut."""
    head, rest = _cut(text, limit)
    return head if not rest else _cut(text, limit - 1)[0] + "…"


def _cut(text: str, limit: int) -> tuple[str, str]:
    """The longest head of `text` within `limit` characters, and the rest.

    Characters are counted as UTF-16 units (an emoji is two), never fewer than Slack counts them.
    """
    astral = len(_ASTRAL.findall(text, 0, limit))
    if not astral:
        return text[:limit], text[limit:]
    size = limit - astral
    units = size + len(_ASTRAL.findall(text, 0, size))
    while size < len(text):
        step = 2 if text[size] > "\uffff" else 1
        if units + step > limit:
            break
        units, size = units + step, size + 1
    return text[:size], text[size:]


def _units(text: str) -> int:
    return len(text) + len(_ASTRAL.findall(text))


def _mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object of our own words (typed text inside is escaped first), within a section's limit."""
    return {"type": "mrkdwn", "text": clip(text, MAX_SECTION_TEXT) if text.strip() else "—"}


def _plain(text: str) -> dict[str, Any]:
    """A plain_text object: shown as is, no formatting, mention or link."""
    return {"type": "plain_text", "text": clip(text, MAX_SECTION_TEXT) if text.strip() else "—"}


def _section(text: dict[str, Any], block_id: str | None = None) -> dict[str, Any]:
    return {"type": "section", "text": text} | ({"block_id": block_id} if block_id else {})


def typed_blocks(label: str, text: str) -> Blocks:
    """Text a person typed (a reason), shown as typed: a bold label, then the text in plain_text sections.

    plain_text can neither format, mention nor link; past MAX_TYPED_SECTIONS sections the rest is cut, saying so.
    """
    chunks: list[str] = []
    rest = text.strip() or "—"
    while rest and len(chunks) < MAX_TYPED_SECTIONS:
        head, rest = _cut(rest, MAX_SECTION_TEXT)
        chunks.append(head)
    if rest:
        note = f" … ({len(rest)} more characters not shown)"
        chunks[-1] = _cut(chunks[-1], MAX_SECTION_TEXT - len(note))[0] + note
    return [_section(_mrkdwn(f"*{label}*"))] + [_section(_plain(chunk)) for chunk in chunks if chunk.strip()]


def _packed(lines: Sequence[str], limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Lines joined by newlines into as few texts within `limit` as they fit (a longer line is clipped)."""
    texts: list[str] = []
    current, size = "", 0
    for whole in lines:
        line = clip(whole, limit)
        length = _units(line)
        if current and size + 1 + length <= limit:
            current, size = f"{current}\n{line}", size + 1 + length
            continue
        if current:
            texts.append(current)
        current, size = line, length
    if current:
        texts.append(current)
    return texts


def _list_blocks(title: str, items: Sequence[str]) -> Blocks:
    """`title` and a line an item, in plain_text sections; past MAX_LISTED items, "… and N more"."""
    lines = [title] + [f"• {clip(item, _MAX_LINE)}" for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"… and {len(items) - MAX_LISTED} more")
    elif not items:
        lines[0] += " —"
    return [_section(_plain(text)) for text in _packed(lines)]


def _bounded(lines: Sequence[str], limit: int = MAX_TEXT) -> str:
    """Lines joined by newlines within `limit`; when they do not all fit, the last says how many were left out."""
    text = "\n".join(lines)
    if _units(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        more = f"… and {len(lines) - index} more"
        if size + _units(line) + 1 + len(more) > limit:
            return "\n".join([*kept, more])
        kept.append(line)
        size += _units(line) + 1
    return text


def capped(blocks: Blocks) -> Blocks:
    """At most MAX_BLOCKS blocks: past them, the last says how many were left out (builders stay well within)."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    left_out = len(blocks) - MAX_BLOCKS + 1
    return [*blocks[: MAX_BLOCKS - 1], _context(f"… and {left_out} more blocks not shown")]


def when(moment: datetime | None) -> str:
    """A time as Slack shows it to each reader in their own zone, with a UTC fallback."""
    if moment is None:
        return "—"
    fallback = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def _who(users: Sequence[str]) -> str:
    named = ", ".join(f"<@{user}>" for user in users[:MAX_NAMED]) or "—"
    return named + (f" and {len(users) - MAX_NAMED} more" if len(users) > MAX_NAMED else "")


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
        f"*Duration*\n{request.duration_text}",
        f"*Source*\n`{source}`" if request.cidr else f"*Source*\n{source}",
        f"*Request*\n`{request.id}`",
        "*Approval*\nnone: break-glass, reviewed afterwards"
        if request.break_glass
        else f"*Approvals*\n{len(request.approvals)} of {request.approvals_required}",
    ]
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(field, MAX_FIELD_TEXT)} for field in fields]}


def card_text(request: AccessRequest) -> str:
    """The notification text of the approval card (what shows where blocks cannot)."""
    return (
        f"Access request {request.id}: <@{request.requester}> asks for {request.target} "
        f"for {request.duration_text} — {_OUTCOME[request.status]}"
    )


def approval_card(request: AccessRequest, target: Target | None = None) -> Blocks:
    """The approval card: the request, and either the buttons (pending) or the outcome and who decided.

    The reason is shown as typed (plain_text); a failure or cancellation's why, which may be typed too, likewise.
    """
    description = f" — {escape(clip(target.description, _MAX_LINE))}" if target and target.description else ""
    blocks: Blocks = [
        _section(_mrkdwn(f"*Access request* `{request.id}`{description}")),
        _fields(request),
        *typed_blocks("Reason", request.reason),
    ]
    if request.status is Status.PENDING:
        blocks.append(_decision_buttons(request))
        blocks.append(_context(f"Expires unanswered {when(request.pending_until)}" + _approved_so_far(request)))
    else:
        blocks.append(_outcome(outcome_line(request, detail=False)))
        why = _detail(request)
        if why:
            blocks.extend(typed_blocks("Why", why))
    return capped(blocks)


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
    return f" · approved so far by {approvers_text(request.approvals)}" if request.approvals else ""


def _detail(request: AccessRequest) -> str | None:
    """Why a request failed, was cancelled or was denied, as recorded (words of a system, or of a person)."""
    if request.status is Status.DENIED:
        return request.deny_reason
    return request.failure if request.status in {Status.FAILED, Status.CANCELLED} and request.failure else None


def outcome_line(request: AccessRequest, *, detail: bool = True) -> str:
    """One line saying where the request stands and who decided; with `detail`, why it failed (escaped)."""
    status = request.status
    line = _OUTCOME[status]
    if status is Status.REVOKED:
        ended_by = f" by <@{request.ended_by}>" if request.ended_by and request.ended_by != "system" else ""
        line += f" at {when(request.ended_at)} ({request.end_reason}){ended_by} · approved by "
        line += approvers_text(request.approvals)
    elif status in {Status.APPROVED, Status.GRANTED}:
        line += f" by {approvers_text(request.approvals)}"
    elif status is Status.DENIED or (status is Status.CANCELLED and request.decided_by not in {None, "system"}):
        line += f" by <@{request.decided_by}>"
    if status is Status.GRANTED:
        line += f" · until {when(request.ends_at)}"
    why = _detail(request)
    if detail and why:
        line += f": {escape(clip(why, _MAX_LINE))}"
    return line


def thread_parent_text(request: AccessRequest) -> str:
    """The audit channel's parent message for one request; its events go in the thread below."""
    return f"Audit trail of {request.id}: <@{request.requester}> → `{request.target}` for {request.duration_text}"


def created_text(request: AccessRequest, channel: str) -> str:
    """The audit thread's first reply as text (the notification of created_blocks, or the message alone)."""
    return (
        f":memo: Requested by <@{request.requester}>: `{request.target}` for {request.duration_text} "
        f"from `{request.cidr or request.role_name}`. Reason: {escape(clip(request.reason, MAX_SECTION_TEXT))}. "
        f"Approval card in <#{channel}>."
    )


def created_blocks(request: AccessRequest, channel: str) -> Blocks:
    """The audit thread's first reply: who asked for what, and the reason as typed."""
    line = (
        f":memo: Requested by <@{request.requester}>: `{request.target}` for {request.duration_text} "
        f"from `{request.cidr or request.role_name}`. Approval card in <#{channel}>."
    )
    return [_section(_mrkdwn(line)), *typed_blocks("Reason", request.reason)]


def submitted_reply(request: AccessRequest, channel: str) -> str:
    """What the requester sees right after asking."""
    return (
        f"Request `{request.id}` for `{request.target}` ({request.duration_text}) is waiting for approval in "
        f"<#{channel}>. It expires unanswered {when(request.pending_until)}."
    )


def unavailable_text() -> str:
    """The answer when Redis cannot be reached: nothing was done."""
    return (
        "jit-lb is unavailable: it cannot reach its state store (Redis) right now, so nothing was requested or "
        "changed. Try again in a minute; if it persists, tell your platform team."
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
    reason = f" Reason: {escape(clip(request.deny_reason, _MAX_LINE))}" if request.deny_reason else ""
    return f":no_entry: <@{request.decided_by}> denied `{request.id}` (`{request.target}`).{reason}"


def denied_blocks(request: AccessRequest) -> Blocks:
    """The denial in the thread and the requester's DM, its reason shown as typed."""
    head = f":no_entry: <@{request.decided_by}> denied `{request.id}` (`{request.target}`)."
    reason = typed_blocks("Reason", request.deny_reason) if request.deny_reason else []
    return capped([_section(_mrkdwn(head)), *reason])


def cancelled_text(request: AccessRequest) -> str:
    if request.decided_by in {None, "system"}:
        why = f": {escape(clip(request.failure, _MAX_LINE))}" if request.failure else ""
        return f":wastebasket: `{request.id}` (`{request.target}`) was cancelled{why}."
    return f":wastebasket: <@{request.decided_by}> withdrew `{request.id}` (`{request.target}`)."


def expired_text(request: AccessRequest) -> str:
    return f":alarm_clock: `{request.id}` expired: nobody decided within the approval window."


def granted_text(request: AccessRequest, objects: list[str], verified: bool) -> str:
    check = "verified at the load balancer" if verified else ":warning: NOT verified at the load balancer"
    head = (
        f":unlock: Access granted to <@{request.requester}> on `{request.target}` until {when(request.ends_at)} "
        f"({check}):"
    )
    listed = [f"• `{escape(clip(obj, _MAX_LINE))}`" for obj in objects]
    return _bounded([head, *(listed or ["• (access already present; nothing new created)"])])


def failed_text(request: AccessRequest) -> str:
    return (
        f":x: Could not grant `{request.id}` on `{request.target}`: {escape(clip(str(request.failure), _MAX_LINE))}. "
        "Nothing was left at the load balancer."
    )


def revoke_failed_text(request: AccessRequest, error: str, approvers: list[str]) -> str:
    return (
        f":rotating_light: Revoking `{request.id}` on `{request.target}` failed: {escape(clip(error, _MAX_LINE))}. "
        f"It is retried, and the sweep keeps trying. {_who(approvers)}"
    )


def summary_blocks(request: AccessRequest) -> Blocks:
    """The last reply of a request's thread: what was granted, to whom, for how long, why, and how it ended.

    The reason is shown as typed; created and removed objects are listed a line each, over as many sections as
    they take, up to MAX_LISTED each.
    """
    lasted = request.lasted()
    lines = [
        f"*Summary of `{request.id}`*",
        f"Requester: <@{request.requester}>  ·  Approvers: {_who(request.approvers)}",
        f"Target: `{request.target}`",
        f"Granted at: {when(request.granted_at)}  ·  Ended at: {when(request.ended_at)}",
        f"Lasted: {format_duration(lasted) if lasted is not None else '—'} of {request.duration_text} requested",
        f"How it ended: {request.end_reason}"
        + (f" by <@{request.ended_by}>" if request.ended_by not in {None, "system"} else ""),
    ]
    removed = "Removed:" + ("" if request.verified else "  :warning: removal NOT verified")
    return capped(
        [
            _section(_mrkdwn("\n".join(lines)), BlockId.SUMMARY),
            *typed_blocks("Reason", request.reason),
            *_list_blocks("Created:", request.created_objects),
            *_list_blocks(removed, request.removed_objects),
            *activity_blocks(request),
        ]
    )


def summary_text(request: AccessRequest) -> str:
    ended = f":lock: Access on `{request.target}` ended ({request.end_reason}) for `{request.id}`."
    return ended + _activity_sentence(request)


MAX_CHANGES_SHOWN = 30  # changes a summary lists before "… and N more"; the audit record keeps more


def activity_blocks(request: AccessRequest) -> Blocks:
    """What happened during the session (docs/policy.md): what changed at the load balancer, and the source's use.

    Changes quote the load balancer (rule descriptions, policy and server names other people chose), so
    they are plain_text, as typed text is; up to MAX_CHANGES_SHOWN, then "… and N more".
    """
    activity = request.activity
    if activity is None:
        return [_section(_plain("What changed during the session: not recorded for this grant."))]
    if activity.changes is None:
        lines = [f"What changed during the session is not known: {activity.unknown or 'it was not read'}"]
    elif not activity.changes:
        lines = ["No changes during the session at the load balancer (jit-lb's own objects aside)."]
    else:
        total = len(activity.changes) + activity.changes_left_out
        shown = activity.changes[:MAX_CHANGES_SHOWN]
        lines = [f"Changed during the session at the load balancer ({total}):"]
        lines += [f"• {clip(change_text(change), _MAX_LINE)}" for change in shown]
        if total > len(shown):
            lines.append(f"… and {total - len(shown)} more")
    if activity.not_compared:
        lines.append(f"Not compared: {activity.not_compared}")
    source = request.cidr or "the source"
    if activity.use is not None:
        reset = " (counted since HAProxy's entry for it was reset)" if activity.use_reset else ""
        lines.append(f"Use from {source} during the session: {use_text(activity.use)}{reset}")
    elif activity.use_unknown:
        lines.append(f"Use from {source} during the session is not known: {activity.use_unknown}")
    blocks = [_section(_plain(text)) for text in _packed(lines)]
    if activity.snapshot_at_end is not None:
        start = f"when granted ({when(activity.snapshot_at_start)}) and " if activity.snapshot_at_start else ""
        blocks.append(
            _context(f"The load balancer was read {start}when the grant ended ({when(activity.snapshot_at_end)}).")
        )
    return blocks


def change_text(change: Change) -> str:
    """One change in words: `what: before → after`, `what: added — after`, or `what: removed — was before`."""
    if change.before is None:
        return f"{change.what}: added — {change.after}"
    if change.after is None:
        return f"{change.what}: removed — was {change.before}"
    return f"{change.what}: {change.before} → {change.after}"


def use_text(use: Use) -> str:
    """A source's counts in words; a count the load balancer does not keep is said so."""

    def count(value: int | None, one: str, many: str) -> str:
        return f"{one} not counted" if value is None else f"{value} {one if value == 1 else many}"

    def size(value: int | None, way: str) -> str:
        return f"bytes {way} not counted" if value is None else f"{_bytes(value)} {way}"

    return ", ".join(
        [
            count(use.connections, "connection", "connections"),
            count(use.http_requests, "HTTP request", "HTTP requests"),
            size(use.bytes_in, "in"),
            size(use.bytes_out, "out"),
        ]
    )


def _bytes(value: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def _activity_sentence(request: AccessRequest) -> str:
    """The summary's notification text about the session: how many changes, and the use; "" when not recorded."""
    activity = request.activity
    if activity is None:
        return ""
    if activity.changes is None:
        sentence = " What changed during the session is not known."
    elif not activity.changes:
        sentence = " No changes during the session."
    else:
        total = len(activity.changes) + activity.changes_left_out
        sentence = f" {total} change{'' if total == 1 else 's'} during the session."
    requests_made = activity.use.http_requests if activity.use is not None else None
    if requests_made is not None:
        sentence += f" {requests_made} HTTP request{'' if requests_made == 1 else 's'} from its source."
    return sentence


def targets_text(targets: dict[str, Target]) -> str:
    """`/jit targets`: the targets a person may request, with their limits."""
    if not targets:
        return "You may not request any target. Ask your platform team to add you to the policy."
    lines = ["*Targets you may request:*"]
    for name, target in sorted(targets.items()):
        required = f", {target.approvals_required} approvals" if target.approvals_required > 1 else ""
        lines.append(
            f"• `{name}` {escape(clip(target.description, _MAX_LINE))} — "
            f"default {format_duration(target.default_duration)}, "
            f"{format_duration(target.min_duration)} to {format_duration(target.max_duration)}{required}; "
            f"approvers {_who(target.approvers)}"
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
        else:
            state = str(request.status)
        lines.append(
            f"• `{request.id}` `{request.target}` for <@{request.requester}> ({request.duration_text}): {state}"
        )
    if more > 0:
        lines.append(f"… and {more} more not shown")
    return "\n".join(lines)


def extension_card_text(request: AccessRequest, extension: Extension) -> str:
    return (
        f"Extension of {request.id}: <@{request.requester}> asks for {extension.duration_text} more on "
        f"{request.target} — {extension.outcome}"
    )


def extension_card(request: AccessRequest, extension: Extension) -> Blocks:
    """The approval card of an extension: same buttons, same value, its own message; the reason as typed."""
    line = (
        f"*Extension of* `{request.id}`: <@{request.requester}> asks for *{extension.duration_text}* more on "
        f"`{request.target}` (now until {when(request.ends_at)})"
    )
    blocks: Blocks = [_section(_mrkdwn(line)), *typed_blocks("Reason", extension.reason)]
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
    return _section(_mrkdwn(text), BlockId.DECISION)


def extension_requested_text(request: AccessRequest) -> str:
    """The thread's note of an extension request as text (the notification of extension_requested_blocks)."""
    extension = request.extension
    more = extension.duration_text if extension else "more time"
    reason = escape(clip(extension.reason, MAX_SECTION_TEXT)) if extension else ""
    return f":hourglass: <@{request.requester}> asked to extend `{request.id}` by {more}. Reason: {reason}"


def extension_requested_blocks(request: AccessRequest) -> Blocks:
    """The thread's note of an extension request, the reason as typed."""
    extension = request.extension
    more = extension.duration_text if extension else "more time"
    line = f":hourglass: <@{request.requester}> asked to extend `{request.id}` by {more}."
    return [_section(_mrkdwn(line)), *typed_blocks("Reason", extension.reason if extension else "")]


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
    return {"type": "context", "elements": [_mrkdwn(text)]}


def mfa_enrolment_text(uri: str, within: timedelta) -> str:
    """The enrolment DM: the `otpauth://` URI (its QR code follows as an image); deleted once it has served."""
    return (
        ":closed_lock_with_key: Step-up MFA for jit-lb: scan the QR code below with your authenticator app "
        f"(or add this key by hand: `{uri}`), then type the app's first code in the form I opened, "
        f"within {format_duration(within)}. This message and the QR code are deleted once you confirm (or when "
        "that time is up, which cancels the enrolment), so that nobody reading your DMs later finds the secret. "
        "If you lose the app, an admin resets your enrolment."
    )


def mfa_reset_dm_text(admin: str) -> str:
    return (
        f":warning: <@{admin}> reset your step-up MFA enrolment: your authenticator no longer works for jit-lb, and "
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
        f":rotating_light: Break-glass `{request.id}` on `{request.target}` for {request.duration_text}: being applied "
        "now, without approval. The approvers are told and will review it."
    )


def breakglass_card_text(request: AccessRequest) -> str:
    return f"Break-glass {request.id}: <@{request.requester}> took {request.target} for {request.duration_text}"


def breakglass_card(request: AccessRequest, approvers: Sequence[str], again: bool = False) -> Blocks:
    """The review card of a break-glass grant: who took what and why, its approvers mentioned, and the two buttons."""
    still = " (still unreviewed)" if again else ""
    asked = f" {_who(sorted(approvers))}: please review it." if approvers else ""
    head = (
        f":rotating_light: *Break-glass{still}* `{request.id}`: <@{request.requester}> took `{request.target}` for "
        f"{request.duration_text} without approval.{asked}"
    )
    blocks: Blocks = [_section(_mrkdwn(head)), _fields(request), *typed_blocks("Reason", request.reason)]
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
                        "text": _plain("Acknowledge"),
                        "value": request.id,
                    },
                    {
                        "type": "button",
                        "action_id": ActionId.REVIEW_FLAG,
                        "style": "danger",
                        "text": _plain("Flag"),
                        "value": request.id,
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
        blocks.append(_outcome(f"{verdict} by <@{request.reviewed_by}> · {outcome_line(request, detail=False)}"))
    return capped(blocks)


def review_text(request: AccessRequest) -> str:
    verdict = "acknowledged" if request.review == "acknowledged" else "flagged"
    return f":mag: <@{request.reviewed_by}> {verdict} break-glass `{request.id}` on `{request.target}`."


def flagged_dm_text(request: AccessRequest) -> str:
    return (
        f":triangular_flag_on_post: <@{request.reviewed_by}> flagged break-glass `{request.id}`: "
        f"<@{request.requester}> took `{request.target}` for {request.duration_text}. "
        f"`/jit revoke {request.id}` ends it if it still runs."
    )


def lockdown_started_text(user: str, reason: str) -> str:
    return (
        f":lock: Lockdown on, by <@{user}>: {escape(clip(reason, _MAX_LINE))}. Every grant is being ended and every "
        "pending request cancelled; new requests and break-glass are refused until `/jit lockdown off`."
    )


def lockdown_ended_text(user: str, ended: Any) -> str:
    return f":unlock: Lockdown lifted by <@{user}> (it was turned on by <@{ended.by}> {when(ended.at)})."


def lockdown_status_text(lockdown: Any) -> str:
    if lockdown is None:
        return "No lockdown: requests are open."
    return (
        f":lock: Lockdown on since {when(lockdown.at)}, by <@{lockdown.by}>: {escape(clip(lockdown.reason, _MAX_LINE))}"
    )
