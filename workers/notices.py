"""Every Slack post about a request, and the one writer of each: cards, audit threads, the requester's DMs.

Cards of new requests and extensions reach a worker through the store's outbox (the web pushes the
request id in the same round trip that stores it) and are posted by `announce`. Outcomes, of jobs
and of the web's decisions alike, are `tell` jobs on the notices queue, which workers take only
when no grant or revoke waits: the state change and its audit record come first and stand alone.
A card is edited only here, rendered from the store's state when it is sent, and read again after
(`show_card`), so that it ends showing the newest state whichever edit lands last. The web answers
only the person who clicked or typed.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import partial
from typing import Any

from jit_lb.access import autoapprove, requests
from jit_lb.access.errors import AuditUnavailableError, TransitionError
from jit_lb.access.requests import AccessRequest, Status
from jit_lb.clock import utcnow
from jit_lb.runtime import Runtime
from slack_out import cards, sentences, summaries
from slack_out.limits import Message
from slack_out.poster import call
from workers.context import WorkerContext, current


class Notice(StrEnum):
    """What a `tell` job says; the words are rendered from the request as it is when the job runs."""

    GRANTED = "granted"
    FAILED = "failed"
    ENDED = "ended"
    EXPIRED = "expired"
    EXTENDED = "extended"
    REVOKE_FAILED = "revoke_failed"
    CANCELLED = "cancelled"  # withdrawn by its requester (the web recorded it)
    EXTENSION_REFUSED = "extension_refused"  # approved, then refused when judged again at the load balancer
    NEVER_RECORDED = "never_recorded"  # a new request closed by a worker: its creation was never recorded
    # Decisions the web recorded; `who` made them.
    APPROVED = "approved"
    DENIED = "denied"
    EXTENSION_APPROVED = "extension_approved"
    EXTENSION_DENIED = "extension_denied"
    REVIEWED = "reviewed"


CARD_EDITS = 5  # edits of one card a notice makes at most, while other processes keep changing its request


GRANT_JOB = "workers.jobs.grant_access"
LOCKED_DOWN = "jit-lb is locked down: no approval counts"  # why an on-call approval did not count


# --- cards --------------------------------------------------------------------------------------


def announce(request_id: str) -> str:
    """Post the approval card a request is missing: a new request's, or its pending extension's."""
    context = current()
    if context.rt.store.is_group(request_id):
        return _announce_group(context, request_id)
    request = context.rt.store.find(request_id)
    if request is None:
        return "unknown request"
    if request.group is not None and request.card_ts is None and request.extension is None:
        return _announce_group(context, request.group)
    if request.break_glass and request.card_ts is None:
        return _post_breakglass_card(context, request)
    if request.status is Status.PENDING and request.card_ts is None:
        return _post_request_card(context, _judge_on_call(context, request))
    if request.auto_approval is not None and request.card_ts is None and request.status.is_open:
        return _post_request_card(context, request)  # approved on call, and the worker stopped before its card
    if request.status is Status.GRANTED and request.extension is not None and request.extension.card_ts is None:
        return _post_extension_card(context, request)
    return "nothing to post"


def _judge_on_call(context: WorkerContext, request: AccessRequest) -> AccessRequest:
    """Ask PagerDuty, now, whether the requester is on call; approve as `system` if so (docs/approvals.md).

    Anything short of a qualifying on-call entry (PagerDuty unreachable, slow, saying no) leaves the
    request to its approvers, and the card says why. The grant job is queued once the card is up.
    """
    rt = context.rt
    target = rt.policy.target_for(request.target)
    if target is None or target.auto_approve is None:
        return request
    if request.starts_at is not None:
        why = "a scheduled window waits for approvers: on call now says nothing of on call at its start"
        return rt.store.update(request.id, not_auto_approved=why)
    if rt.store.lockdown() is not None:  # as a click's approval: none counts; the lockdown's next pass cancels it
        return rt.store.update(request.id, not_auto_approved=LOCKED_DOWN)
    principal = rt.policy.principals.get(request.requester)
    email = principal.email if principal is not None and principal.email else None
    if email is None and rt.pagerduty is not None:
        email = context.notifier.email_of(request.requester)
    verdict = autoapprove.judge_on_call(request, target, email, rt.pagerduty, utcnow())
    if verdict.approval is None:
        return rt.store.update(request.id, not_auto_approved=verdict.why_not or None)
    if rt.store.lockdown() is not None:  # begun while PagerDuty was asked (up to its 3 s): again, none counts
        return rt.store.update(request.id, not_auto_approved=LOCKED_DOWN)
    approval = verdict.approval

    def record(_: AccessRequest, after: AccessRequest) -> None:
        rt.audit.request_event(
            "request.approved", after, actor="system", approvals=0, auto_approve=approval.as_record()
        )

    try:
        _, request = rt.store.transition(request.id, lambda r: requests.auto_approve(r, approval), record)
    except (TransitionError, AuditUnavailableError) as err:
        # Decided otherwise meanwhile (cancelled, expired), or the log refuses the record: a human decides.
        return rt.store.update(request.id, not_auto_approved=f"it could not be approved on call ({err})")
    return request


def card_approvers(rt: Runtime, request: AccessRequest) -> list[str]:
    """Who may approve the request, named on its card: usergroups expanded, never its requester."""
    return sorted(rt.approvers.of(rt.policy.target_for(request.target)) - {request.requester})


def _post_request_card(context: WorkerContext, request: AccessRequest) -> str:
    """The card, its audit-thread parent and the thread's first reply; a card Slack refuses cancels the request."""
    rt, notifier = context.rt, context.notifier
    target = rt.policy.target_for(request.target)
    if target is None:
        return "target gone"
    card_channel = rt.policy.channel_for(target)
    card_ts = notifier.post_card(request, card_channel, card_approvers(rt, request))
    if card_ts is None and request.auto_approval is not None:
        _queue_auto_grant(context, request)  # approved already: access must not wait on Slack
        return "approved on call; its card could not be posted"
    if card_ts is None:
        why = "the approval card could not be posted to Slack"
        _, request = rt.store.transition(request.id, lambda r: requests.cancel(r, why, utcnow()))
        rt.audit.request_event("request.cancelled", request, actor="system", why=request.failure)
        notifier.dm(request.requester, cards.outcome_line(request) + f" (`{request.id}`)")
        return "cancelled"
    # Recorded at once: a click on the card is judged against it.
    request = rt.store.update(
        request.id, card_channel=card_channel, card_ts=card_ts, thread_channel=card_channel, thread_ts=card_ts
    )
    audit_channel = rt.policy.audit_channel
    if audit_channel:
        parent = notifier.post_parent(request, audit_channel)
        if parent is not None:
            request = rt.store.update(request.id, thread_channel=audit_channel, thread_ts=parent)
    created = sentences.created_message(request, card_channel)
    notifier.thread(request, created.text, created.blocks)
    if request.auto_approval is not None:
        _queue_auto_grant(context, request)  # only now that the card shows it: the grant's notices edit a card
    context.homes.refresh(request)
    return "posted"


def _announce_group(context: WorkerContext, group: str) -> str:
    """The cards of a request of several targets: on-call judged for each target first, then one card in each of
    their approver channels listing every target, one audit thread for them all, and the grants of those approved
    on call queued once the cards show it. A card already posted (a worker stopped half-way) is not posted again.
    """
    rt, notifier = context.rt, context.notifier
    stored = rt.store.parts(group)
    if any(p.status is Status.GRANTED and p.extension is not None and p.extension.card_ts is None for p in stored):
        return _post_extensions_of_several(context, stored)
    parts = [
        _judge_on_call(context, part) if part.status is Status.PENDING and part.card_ts is None else part
        for part in stored
    ]
    by_channel: dict[str, list[AccessRequest]] = {}
    for part in parts:
        target = rt.policy.target_for(part.target)
        if target is not None:
            by_channel.setdefault(rt.policy.channel_for(target), []).append(part)
    approvers = {part.id: card_approvers(rt, part) for part in parts}
    thread = next(((p.thread_channel, p.thread_ts) for p in parts if p.thread_channel and p.thread_ts), None)
    new_thread = thread is None
    for channel, theirs in by_channel.items():
        if all(part.card_ts is not None for part in theirs):
            continue
        card_ts = notifier.post_card_of_several(parts, channel, approvers)
        if card_ts is None:
            _card_refused(context, [part for part in theirs if part.status is Status.PENDING])
            continue
        for part in theirs:
            rt.store.update(part.id, card_channel=channel, card_ts=card_ts)
        thread = thread or (channel, card_ts)
    if thread is None:
        return "not posted"
    if new_thread:
        parts = _open_thread(context, parts, thread, list(by_channel))
    for part in parts:
        if part.auto_approval is not None:
            _queue_auto_grant(context, part)
    for part in parts:  # each target's approvers see it waiting in their homes
        context.homes.refresh(part)
    return "posted"


def _open_thread(
    context: WorkerContext, parts: list[AccessRequest], card: tuple[str, str], channels: list[str]
) -> list[AccessRequest]:
    """One audit thread for every target of a request (under its first card, or the audit channel's parent), and
    its first reply; the parts as they are now."""
    rt, notifier = context.rt, context.notifier
    thread = card
    if rt.policy.audit_channel:
        parent = notifier.post_parent(parts[0], rt.policy.audit_channel)
        thread = (rt.policy.audit_channel, parent) if parent is not None else card
    parts = [rt.store.update(part.id, thread_channel=thread[0], thread_ts=thread[1]) for part in parts]
    created = sentences.created_several_message(parts, channels)
    notifier.thread(parts[0], created.text, created.blocks)
    return parts


def _card_refused(context: WorkerContext, parts: list[AccessRequest]) -> None:
    """Targets whose card Slack refused are cancelled, as a lone request's would be; the requester is told."""
    rt = context.rt
    why = "the approval card could not be posted to Slack"
    for part in parts:
        _, after = rt.store.transition(part.id, lambda r: requests.cancel(r, why, utcnow()))
        rt.audit.request_event("request.cancelled", after, actor="system", why=after.failure)
        context.notifier.dm(after.requester, cards.outcome_line(after) + f" (`{after.visible_id}` `{after.target}`)")


def _queue_auto_grant(context: WorkerContext, request: AccessRequest) -> None:
    """Queue the grant of a request approved on call (by name: jobs sit above notices), and tell its requester."""
    if request.status is Status.APPROVED:
        context.rt.queue.enqueue(GRANT_JOB, request.id, job_id=f"grant-{request.id}")
        context.notifier.dm(request.requester, sentences.approved_dm_text(request))


def _post_breakglass_card(context: WorkerContext, request: AccessRequest, again: bool = False) -> str:
    """Announce a break-glass grant in the approver channel, mentioning its approvers, with its review buttons."""
    rt, notifier = context.rt, context.notifier
    target = rt.policy.target_for(request.target)
    channel = rt.policy.channel_for(target) if target else rt.policy.approver_channel
    approvers = sorted(rt.approvers.of(target))
    card_ts = notifier.post_breakglass_card(request, channel, approvers, again)
    if card_ts is None or again:
        return "posted" if card_ts else "not posted"
    request = rt.store.update(
        request.id, card_channel=channel, card_ts=card_ts, thread_channel=channel, thread_ts=card_ts
    )
    context.homes.refresh(request)
    return "posted"


def announce_review(request_id: str) -> str:
    """Announce again a break-glass grant nobody reviewed within `review_within` (queued by the reconciler)."""
    context = current()
    request = context.rt.store.find(request_id)
    if request is None or not request.break_glass or request.review is not None:
        context.rt.store.reviewed(request_id)
        return "reviewed"
    return _post_breakglass_card(context, request, again=True)


def _post_extension_card(context: WorkerContext, request: AccessRequest) -> str:
    rt, notifier = context.rt, context.notifier
    target = rt.policy.target_for(request.target)
    if target is None or request.extension is None:
        return "target gone"
    channel = rt.policy.channel_for(target)
    card_ts = notifier.post_extension_card(request, channel)
    if card_ts is None:
        return "not posted"
    extension = request.extension.model_copy(update={"card_channel": channel, "card_ts": card_ts})
    after = rt.store.update(request.id, extension=extension)
    requested = sentences.extension_requested_message(after)
    notifier.thread(after, requested.text, requested.blocks)
    context.homes.refresh(after)
    return "posted"


def _post_extensions_of_several(context: WorkerContext, parts: list[AccessRequest]) -> str:
    """The extension card of the targets of a request of several that wait for more time: one in each of their
    approver channels, listing each; one note in the request's thread."""
    rt, notifier = context.rt, context.notifier
    waiting = [
        p for p in parts if p.status is Status.GRANTED and p.extension is not None and p.extension.card_ts is None
    ]
    by_channel: dict[str, list[AccessRequest]] = {}
    for part in waiting:
        target = rt.policy.target_for(part.target)
        if target is not None:
            by_channel.setdefault(rt.policy.channel_for(target), []).append(part)
    posted: list[AccessRequest] = []
    for channel, theirs in by_channel.items():
        card_ts = notifier.post_extension_of_several(theirs, channel)
        if card_ts is None:
            continue
        for part in theirs:
            assert part.extension is not None
            extension = part.extension.model_copy(update={"card_channel": channel, "card_ts": card_ts})
            posted.append(rt.store.update(part.id, extension=extension))
    if not posted:
        return "not posted"
    requested = sentences.extension_requested_message(posted[0])
    notifier.thread(posted[0], requested.text, requested.blocks)
    for part in posted:
        context.homes.refresh(part)
    return "posted"


# --- outcomes -----------------------------------------------------------------------------------


def queue_notice(
    rt: Runtime, request: AccessRequest, notice: Notice, *, verified: bool = True, error: str = ""
) -> None:
    """Queue the Slack posts of an outcome on the notices queue, so they survive this worker and wait for no one."""
    rt.notices.enqueue(tell, request.id, notice.value, verified=verified, error=error)


def tell(
    request_id: str, notice: str, verified: bool = True, error: str = "", who: str = "", done: bool = False
) -> str:
    """Edit the request's card to its state now, and post the outcome in its thread (and to whom it concerns).

    `who` made a decision the web recorded; `done`: their approval of an extension completed it.
    """
    context = current()
    rt, notifier = context.rt, context.notifier
    request = rt.store.find(request_id)
    if request is None:
        return "unknown request"
    kind = Notice(notice)
    if kind is Notice.NEVER_RECORDED:
        return _tell_never_recorded(context, request)
    if kind is Notice.REVOKE_FAILED:
        # For the approvers, in the thread: the requester has nothing to do about it.
        approvers = sorted(rt.approvers.of(rt.policy.target_for(request.target)))
        notifier.thread(request, sentences.revoke_failed_text(request, error, approvers))
        return "told"
    if kind is Notice.EXTENSION_REFUSED:
        _show(context, request, extension=True)
        text = sentences.extension_refused_text(request, error)
        notifier.thread(request, text)
        notifier.dm(request.requester, text)
        context.homes.refresh(request)
        return "told"
    _show(context, request, extension=kind in {Notice.EXTENSION_APPROVED, Notice.EXTENSION_DENIED})
    if kind in _DECISIONS:
        _DECISIONS[kind](context, request, who, done)
    elif kind is Notice.CANCELLED:
        notifier.thread(request, sentences.cancelled_text(request))  # the requester did it: no DM
    elif request.group is not None and kind is Notice.ENDED:
        # One target of several: a line now; the summary, with Request again, once every target has ended.
        outcome = _outcome(request, kind, verified)
        notifier.thread(request, outcome.text)
        notifier.dm(request.requester, outcome.text)
    else:
        outcome = _outcome(request, kind, verified)
        notifier.thread(request, outcome.text, outcome.blocks)
        # The requester's copy of an ended grant or an expired request carries Request again (docs/approvals.md).
        mine = sentences.again_message(request, outcome) if kind in {Notice.ENDED, Notice.EXPIRED} else outcome
        notifier.dm(request.requester, mine.text, mine.blocks)
    if request.group is not None:
        _sum_up(context, request.group)
    context.homes.refresh(request)
    return "told"


def _tell_never_recorded(context: WorkerContext, request: AccessRequest) -> str:
    """The requester's DM of a new request closed as never recorded (no card, no thread: nobody else saw it), once a
    request people see, with Request again; none when its web recorded it late and told them to try again itself."""
    rt = context.rt
    if not rt.store.tell_closed(request.visible_id, utcnow()):
        return "told already"
    parts = rt.store.parts(request.visible_id)
    mine = sentences.again_message(parts[0], sentences.never_recorded_message(parts))
    context.notifier.dm(request.requester, mine.text, mine.blocks)
    return "told"


SUMMARY_CLAIM_SECONDS = 7 * 86400  # a request of several targets is summed up once, however many workers look


def _sum_up(context: WorkerContext, group: str) -> None:
    """Once every target of a request of several has ended (and one was granted), its one closing summary in the
    thread, and the requester's copy with Request again; posted once, by the first worker to see them all ended
    (each target's notice runs after its own end, so the last one's sees them all)."""
    rt, notifier = context.rt, context.notifier
    parts = rt.store.parts(group)
    if any(part.status.is_open for part in parts) or all(part.granted_at is None for part in parts):
        return
    if not rt.store.claim(f"summary-{group}", SUMMARY_CLAIM_SECONDS):
        return
    summary = summaries.summary_of_several(parts)
    notifier.thread(parts[0], summary.text, summary.blocks)
    mine = sentences.again_message(parts[0], summary)
    notifier.dm(parts[0].requester, mine.text, mine.blocks)


def _show(context: WorkerContext, request: AccessRequest, *, extension: bool) -> None:
    """Edit the request's card (or its extension's) to its state now: every card of a request of several targets."""
    if request.group is not None:
        (_show_extensions_of_several if extension else _show_group_cards)(context, request.group)
    else:
        (show_extension_card if extension else show_card)(context, request.id)


# What a card should show now, by card, each with the edit that sends exactly that; none when there is no card.
Wanted = dict[Any, tuple[Message, Callable[[], Message | None]]]


def _edit_until_settled(wanted: Callable[[], Wanted]) -> None:
    """Edit each card to the store's state now, and again while that state changes under the edit (at most
    CARD_EDITS rounds).

    Another worker may be editing the same card from an older read, and its edit may land after this one;
    reading the store again after each edit and editing once more when the card would show something else
    leaves the card with the newest state, whichever edit lands last.
    """
    shown: dict[Any, Message | None] = {}
    for _ in range(CARD_EDITS):
        stale = [(card, edit) for card, (message, edit) in wanted().items() if shown.get(card) != message]
        if not stale:
            return
        for card, edit in stale:
            shown[card] = edit()


def show_card(context: WorkerContext, request_id: str) -> None:
    """Edit the request's card to the store's state now, and again while that state changes under the edit."""
    rt, notifier = context.rt, context.notifier

    def wanted() -> Wanted:
        request = rt.store.find(request_id)
        if request is None or request.card_ts is None:
            return {}
        approvers = card_approvers(rt, request)
        return {request.card_ts: (notifier.card(request, approvers), lambda: notifier.update_card(request, approvers))}

    _edit_until_settled(wanted)


def _show_group_cards(context: WorkerContext, group: str) -> None:
    """`show_card` for a request of several targets: every card of it (one an approver channel) edited to show every
    target's state now, again while that state changes under the edits."""
    rt, notifier = context.rt, context.notifier

    def wanted() -> Wanted:
        parts = rt.store.parts(group)
        approvers = {part.id: card_approvers(rt, part) for part in parts}
        message = notifier.card_of_several(parts, approvers)
        posted = sorted({(p.card_channel, p.card_ts) for p in parts if p.card_channel and p.card_ts})
        return {card: (message, partial(notifier.update_card_of_several, parts, card, approvers)) for card in posted}

    _edit_until_settled(wanted)


def show_extension_card(context: WorkerContext, request_id: str) -> None:
    """Edit the card of the request's pending extension (else of its last decided one) as `show_card` does."""
    rt, notifier = context.rt, context.notifier

    def wanted() -> Wanted:
        request = rt.store.find(request_id)
        extension = None if request is None else request.extension or (request.extensions or [None])[-1]
        if request is None or extension is None:
            return {}
        return {
            "extension": (
                cards.extension_card(request, extension),
                lambda: notifier.update_extension_card(request, extension),
            )
        }

    _edit_until_settled(wanted)


def _show_extensions_of_several(context: WorkerContext, group: str) -> None:
    """`show_extension_card` for a request of several targets: each extension card edited to show the targets it
    lists as they stand now, again while that changes under the edits."""
    rt, notifier = context.rt, context.notifier

    def wanted() -> Wanted:
        by_card: dict[tuple[str, str], list[AccessRequest]] = {}
        for part in rt.store.parts(group):
            extension = cards.shown_extension(part)
            if extension is not None and extension.card_channel and extension.card_ts:
                by_card.setdefault((extension.card_channel, extension.card_ts), []).append(part)
        return {
            card: (
                cards.extension_of_several(theirs),
                partial(notifier.update_extension_of_several, theirs, card),
            )
            for card, theirs in by_card.items()
        }

    _edit_until_settled(wanted)


def _approved(context: WorkerContext, request: AccessRequest, who: str, _: bool) -> None:
    context.notifier.thread(request, sentences.approval_text(request, who))
    if request.approval_place(who) >= request.approvals_required:  # the approval that completed them
        context.notifier.dm(request.requester, sentences.approved_dm_text(request))


def _denied(context: WorkerContext, request: AccessRequest, _who: str, _done: bool) -> None:
    denied = sentences.denied_message(request)
    context.notifier.thread(request, denied.text, denied.blocks)
    again = sentences.again_message(request, denied)
    context.notifier.dm(request.requester, again.text, again.blocks)


def _extension_approved(context: WorkerContext, request: AccessRequest, who: str, done: bool) -> None:
    context.notifier.thread(request, sentences.extension_approval_text(request, who, done))


def _extension_denied(context: WorkerContext, request: AccessRequest, who: str, _: bool) -> None:
    text = sentences.extension_denied_text(request, who)
    context.notifier.thread(request, text)
    context.notifier.dm(request.requester, text)


def _reviewed(context: WorkerContext, request: AccessRequest, _who: str, _done: bool) -> None:
    rt, notifier = context.rt, context.notifier
    notifier.thread(request, sentences.review_text(request))
    if request.review == "flagged":
        for admin in sorted(rt.policy.people(rt.policy.admins, rt.approvers.directory.members)):
            notifier.dm(admin, sentences.flagged_dm_text(request))


_DECISIONS = {
    Notice.APPROVED: _approved,
    Notice.DENIED: _denied,
    Notice.EXTENSION_APPROVED: _extension_approved,
    Notice.EXTENSION_DENIED: _extension_denied,
    Notice.REVIEWED: _reviewed,
}


def refresh_homes(request_id: str) -> str:
    """Publish again the App Homes a request shows in."""
    context = current()
    request = context.rt.store.find(request_id)
    if request is None:
        return "unknown request"
    return f"{context.homes.refresh(request)} homes"


def show_home(user: str) -> str:
    """Publish `user`'s App Home as the store holds it (queued by the web when they open it, one at a time)."""
    context = current()
    context.rt.store.home_taken(user)  # taken before it is read: an open from now on queues a publish again
    context.homes.publish(user)
    return "published"


def call_slack(method: str, arguments: dict[str, Any]) -> str:
    """A Web API call the web handed on when Slack rate-limited it (queued for after Retry-After): the workers'
    client waits out a further 429, so the web's threads never do."""
    return "done" if call(current().notifier.client, method, **arguments) is not None else "refused"


def _outcome(request: AccessRequest, kind: Notice, verified: bool) -> Message:
    """An outcome's message in the thread: an ended grant's is its summary, the others' their text alone."""
    if kind is Notice.ENDED:
        return summaries.summary_message(request)
    if kind is Notice.GRANTED:
        text = sentences.granted_text(request, list(request.created_objects), verified)
    elif kind is Notice.FAILED:
        text = sentences.failed_text(request)
    elif kind is Notice.EXPIRED:
        text = sentences.expired_text(request)
    else:
        text = sentences.extended_text(request, verified)
    return Message(text, [])


def warn_expiry(request_id: str, ends_at: int) -> str:
    """Tell the requester their access ends soon, with the command that extends it (queued for the warning time)."""
    context = current()
    rt = context.rt
    request = rt.store.find(request_id)
    if request is None or request.status is not Status.GRANTED or request.ends_at is None:
        return "not granted"
    if int(request.ends_at.timestamp()) != ends_at:
        return "extended since"
    minutes = max(1, round((request.ends_at - utcnow()).total_seconds() / 60))
    context.notifier.dm(request.requester, sentences.warning_text(request, minutes))
    rt.audit.request_event("grant.warned", request, actor="system", ends_at=request.ends_at)
    return "warned"
