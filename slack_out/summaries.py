"""The last reply of a request's audit thread: what was granted, how it ended, and what happened during it."""

from __future__ import annotations

from typing import Any

from jit_lb.access.durations import format_duration
from jit_lb.access.requests import AccessRequest, Change, Use
from slack_out.ids import BlockId
from slack_out.limits import (
    MAX_LINE,
    Blocks,
    Message,
    capped,
    clip,
    context_block,
    list_blocks,
    mrkdwn,
    packed,
    people,
    plain,
    section,
    typed_blocks,
    when,
)


def summary_message(request: AccessRequest) -> Message:
    """The last reply of a request's thread: what was granted, to whom, for how long, why, and how it ended; its
    notification text says how it ended and, in a sentence, what happened during the session.

    The reason is shown as typed; created and removed objects are listed a line each, over as many sections as
    they take, up to MAX_LISTED each.
    """
    ended = f":lock: Access on `{request.target}` ended ({request.end_reason}) for `{request.visible_id}`."
    head, rest = _grant_blocks(request)
    blocks = capped([{**head, "block_id": BlockId.SUMMARY}, *typed_blocks("Reason", request.reason), *rest])
    return Message(ended + _activity_sentence(request), blocks)


def _grant_blocks(request: AccessRequest) -> tuple[dict[str, Any], Blocks]:
    """A grant's summary section, and the blocks after the reason: created, removed, what happened."""
    lasted = request.lasted()
    lines = [
        f"*Summary of `{request.visible_id}`*",
        f"Requester: <@{request.requester}>  ·  Approvers: {people(request.approvers)}",
        f"Target: `{request.target}`",
        f"Granted at: {when(request.granted_at)}  ·  Ended at: {when(request.ended_at)}",
        f"Lasted: {format_duration(lasted) if lasted is not None else '—'} of {request.duration_text} requested",
        f"How it ended: {request.end_reason}"
        + (f" by <@{request.ended_by}>" if request.ended_by not in {None, "system"} else ""),
    ]
    removed = "Removed:" + ("" if request.verified else "  :warning: removal NOT verified")
    return section(mrkdwn("\n".join(lines))), [
        *list_blocks("Created:", request.created_objects),
        *list_blocks(removed, request.removed_objects),
        *activity_blocks(request),
    ]


def summary_of_several(parts: list[AccessRequest]) -> Message:
    """The last reply of the thread of a request of several targets, once every target has ended: the request once,
    then each target's summary (`summary_message`'s, without the reason again), or how it ended without a grant."""
    first = parts[0]
    how = ", ".join(f"`{part.target}` ({part.end_reason or part.status})" for part in parts)
    head = f"*Summary of `{first.visible_id}`*: every target has ended: {how}"
    blocks: Blocks = [section(mrkdwn(clip(head, MAX_LINE * 4)), BlockId.SUMMARY), *typed_blocks("Reason", first.reason)]
    for part in parts:
        if part.granted_at is None:
            blocks.append(section(mrkdwn(clip(f"*`{part.target}`*: never granted ({part.status})", MAX_LINE))))
            continue
        head_of_part, rest = _grant_blocks(part)
        blocks += [head_of_part, *rest]
    text = f":lock: Every target of `{first.visible_id}` has ended: " + ", ".join(
        f"{part.target} ({part.end_reason or part.status})" for part in parts
    )
    return Message(clip(text, MAX_LINE * 2), capped(blocks))


MAX_CHANGES_SHOWN = 30  # changes a summary lists before "… and N more"; the audit record keeps more


def activity_blocks(request: AccessRequest) -> Blocks:
    """What happened during the session (docs/policy.md): what changed at the load balancer, and the source's use.

    Changes quote the load balancer (rule descriptions, policy and server names other people chose), so
    they are plain_text, as typed text is; up to MAX_CHANGES_SHOWN, then "… and N more".
    """
    activity = request.activity
    if activity is None:
        return [section(plain("What changed during the session: not recorded for this grant."))]
    if activity.changes is None:
        lines = [f"What changed during the session is not known: {activity.unknown or 'it was not read'}"]
    elif not activity.changes:
        lines = ["No changes during the session at the load balancer (jit-lb's own objects aside)."]
    else:
        total = len(activity.changes) + activity.changes_left_out
        shown = activity.changes[:MAX_CHANGES_SHOWN]
        lines = [f"Changed during the session at the load balancer ({total}):"]
        lines += [f"• {clip(change_text(change), MAX_LINE)}" for change in shown]
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
    blocks = [section(plain(text)) for text in packed(lines)]
    if activity.snapshot_at_end is not None:
        start = f"when granted ({when(activity.snapshot_at_start)}) and " if activity.snapshot_at_start else ""
        blocks.append(
            context_block(f"The load balancer was read {start}when the grant ended ({when(activity.snapshot_at_end)}).")
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
