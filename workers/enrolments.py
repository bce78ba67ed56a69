"""What Slack keeps of an MFA secret goes (docs/command-and-slack.md, Step-up MFA): the enrolment's DM and QR
code are deleted once it is confirmed, and an enrolment not confirmed within `mfa.enrol_within` is cancelled
and its secret destroyed.

The web marks a user due (at once on a confirmation, at the deadline on an enrolment) and queues
`forget_enrolment`; every worker's loop also takes the users that are due each second, so a lost
job, or a Slack that refused a delete, only delays the deletion. A delete that failed is tried again
RETRY later; a message or file already gone counts as deleted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from jit_lb.access.errors import MfaError
from jit_lb.clock import utcnow
from slack_out import sentences
from slack_out.enrolment import post_enrolment
from workers import context

log = structlog.get_logger("jit_lb.worker")

RETRY = timedelta(seconds=30)


def forget_enrolment(user: str) -> str:
    """The job the web queues when an enrolment is confirmed: delete what carried the secret now."""
    rt = context.current().rt
    if not rt.mfa.take_forget(user):
        return "taken"  # a worker's loop was quicker, or it was done already
    return forget(user, utcnow())


def send_enrolment(user: str, parts: str) -> str:
    """The parts of an enrolment's DM (`message`, `file`) Slack refused the web (its rate limit): posted here, the
    secret read from Redis (never from the job), each carrier remembered; this client waits out a further 429."""
    ctx = context.current()
    rt = ctx.rt
    left = post_enrolment(rt.mfa, ctx.notifier, user, rt.policy.mfa.enrol_within, parts.split(","))
    current = rt.mfa.enrolment(user)
    if current is None or current.confirmed:
        rt.mfa.forget_at(user, utcnow())  # confirmed (or cancelled) while this was on its way: its carriers go now
    if left:
        log.warning("an MFA enrolment's DM could not be sent", user=user, parts=",".join(left))
        return "not sent: " + ",".join(left)
    return "sent"


def forget_due(now: datetime | None = None) -> int:
    """The loop's turn: every user whose forgetting is due (each taken by one worker); how many were done."""
    rt = context.current().rt
    moment = now or utcnow()
    done = 0
    for user in rt.mfa.due_to_forget(moment):
        if rt.mfa.take_forget(user):
            forget(user, moment)
            done += 1
    return done


def forget(user: str, now: datetime) -> str:
    """Cancel `user`'s enrolment if it is unconfirmed past its time, then delete every Slack object that carried
    a secret of theirs, unless the enrolment is still waiting for its first code (the person still needs them)."""
    ctx = context.current()
    rt, notifier = ctx.rt, ctx.notifier
    within = rt.policy.mfa.enrol_within
    try:
        enrolment = rt.mfa.enrolment(user)
    except MfaError:
        enrolment = None  # sealed with another key: useless to anyone, and its carriers still go
    if enrolment is not None and not enrolment.confirmed:
        deadline = enrolment.created_at + within
        if now < deadline:
            rt.mfa.forget_at(user, deadline)  # a newer enrolment: its own time
            return "waiting"
        if rt.mfa.abandon(enrolment):
            rt.audit.record("mfa.cancelled", actor="system", target=None, user=user, why="not confirmed in time")
            notifier.dm(user, sentences.mfa_cancelled_text(within))
    left = 0
    for carrier in rt.mfa.carriers(user):
        kind, *ref = carrier
        gone = notifier.delete_message(ref[0], ref[1]) if kind == "message" else notifier.delete_file(ref[0])
        if gone:
            rt.mfa.carrier_gone(user, carrier)
        else:
            left += 1
    if left:
        log.warning("an MFA secret's carriers could not all be deleted; trying again", user=user, left=left)
        rt.mfa.forget_at(user, now + RETRY)
        return "retrying"
    return "forgotten"
