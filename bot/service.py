"""What the Slack side does with a command or a click: check, store, audit, enqueue, tell people."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from redis.exceptions import RedisError
from rq import Queue

from bot import blocks
from bot.access import commands, requests
from bot.access.audit import AuditLog
from bot.access.commands import (
    ExtendCommand,
    HelpCommand,
    ListCommand,
    RequestCommand,
    RevokeCommand,
    TargetsCommand,
)
from bot.access.durations import format_duration
from bot.access.errors import (
    ApprovalError,
    CommandError,
    NotFoundError,
    StoreUnavailableError,
    TransitionError,
)
from bot.access.policy import Policy
from bot.access.requests import AccessRequest, Status
from bot.access.store import RequestStore
from bot.ids import ActionId
from bot.notify import Notifier

log = structlog.get_logger("jit_lb.service")

JOBS = "workers.jobs."
CARD_RECORD_WAIT = 2.0  # seconds a click may wait for the card's position to be recorded
UNAVAILABLE = (
    "jit-lb cannot reach its state store (Redis) right now, so nothing was requested or changed. "
    "Try again in a minute; if it persists, tell your platform team."
)


# What a command may fail with and still be answered: Redis away, or a refusal.
_FAILURES = (StoreUnavailableError, CommandError, NotFoundError)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Reply:
    """The ephemeral answer to a command, and what to do once Slack has it."""

    text: str
    then: Callable[[], None] | None = None


class AccessService:
    """The Slack side's one entry point into the core; every method is synchronous and quick."""

    def __init__(
        self,
        policy: Policy,
        store: RequestStore,
        audit: AuditLog,
        notifier: Notifier,
        queue: Queue,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.policy = policy
        self.store = store
        self.audit = audit
        self.notifier = notifier
        self.queue = queue
        self.clock = clock

    # --- /jit -------------------------------------------------------------------------------

    async def command_async(self, user: str, text: str, channel: str | None) -> Reply:
        """`command` for the web's event loop: `request`, the busy one, stores through asyncio; the rest in a thread."""
        try:
            parsed = commands.parse_command(text)
            if isinstance(parsed, RequestCommand):
                build = commands.build_request(self.policy, user, parsed, self.clock(), channel)
                return self._requested(await self.store.create_async(build), user)
        except _FAILURES as err:
            return self._failed(user, text, err)
        return await asyncio.to_thread(self.command, user, text, channel)

    def command(self, user: str, text: str, channel: str | None) -> Reply:
        """Answer one `/jit` command; refusals are audited and change nothing."""
        try:
            parsed = commands.parse_command(text)
            if isinstance(parsed, RequestCommand):
                return self._request(user, parsed, channel)
            if isinstance(parsed, RevokeCommand):
                return self._revoke(user, parsed.request_id)
            if isinstance(parsed, ExtendCommand):
                return self._extend(user, parsed)
            if isinstance(parsed, ListCommand):
                return Reply(blocks.list_text(self._visible(user)))
            if isinstance(parsed, TargetsCommand):
                return Reply(blocks.targets_text(self.policy, user))
            assert isinstance(parsed, HelpCommand)
            return Reply(blocks.help_text(parsed.unknown))
        except _FAILURES as err:
            return self._failed(user, text, err)

    def _failed(self, user: str, text: str, err: Exception) -> Reply:
        """The answer to a command that changed nothing: Redis away, or a refusal (audited)."""
        if isinstance(err, StoreUnavailableError):
            return Reply(UNAVAILABLE)
        self.audit.record("request.refused", actor=user, target=_target_word(text), text=text[:500], why=str(err))
        return Reply(blocks.refusal_text(str(err)))

    def _request(self, user: str, parsed: RequestCommand, channel: str | None) -> Reply:
        build = commands.build_request(self.policy, user, parsed, self.clock(), channel)
        return self._requested(self.store.create(build), user)

    def _requested(self, request: AccessRequest, user: str) -> Reply:
        """Audit a stored request and answer its requester."""
        target = self.policy.targets[request.target]
        card_channel = self.policy.channel_for(target)
        self.audit.request_event("request.created", request, actor=user, pending_until=request.pending_until)
        # The card is posted by a worker (the store queued the id with the request), and pending requests are
        # expired by every worker's due-check: the web answers the command and does no more.
        return Reply(blocks.submitted_reply(request, card_channel))

    def announce(self, request_id: str) -> None:
        """Post a new request's approval card, its audit-thread parent and first reply (a worker does this)."""
        request = self.store.get(request_id)
        target = self.policy.target_for(request.target)
        if request.status is not Status.PENDING or request.card_ts is not None or target is None:
            return
        card_channel = self.policy.channel_for(target)
        card_ts = self.notifier.post_card(request, card_channel)
        if card_ts is None:
            _, request = self.store.transition(
                request.id, lambda r: requests.cancel(r, "the approval card could not be posted to Slack", self.clock())
            )
            self.audit.request_event("request.cancelled", request, actor="system", why=request.failure)
            self.notifier.dm(request.requester, blocks.outcome_line(request) + f" (`{request.id}`)")
            return
        # Recorded at once: a click on the card is judged against it.
        request = self.store.update(
            request.id, card_channel=card_channel, card_ts=card_ts, thread_channel=card_channel, thread_ts=card_ts
        )
        audit_channel = self.policy.audit_channel
        if audit_channel:
            parent = self.notifier.post_parent(request, audit_channel)
            if parent is not None:
                request = self.store.update(request.id, thread_channel=audit_channel, thread_ts=parent)
        self.notifier.thread(request, blocks.created_text(request, card_channel))

    def _revoke(self, user: str, request_id: str) -> Reply:
        request = self.store.get(request_id)
        target = self.policy.target_for(request.target)
        allowed = {request.requester} | (self.notifier.expand(target.approvers) if target else set())
        if user not in allowed:
            raise CommandError(f"only the requester or an approver of `{request.target}` can revoke {request_id}")
        if request.status is not Status.GRANTED:
            raise CommandError(f"{request_id} is {request.status}, not granted; there is nothing to revoke")
        if not self._enqueue("revoke_access", request_id, "revoked", user, job_id=f"revoke-now-{request_id}"):
            raise StoreUnavailableError("the revoke could not be queued")
        return Reply(f"Revoking `{request_id}` on `{request.target}` now; the thread will say when it is done.")

    def _extend(self, user: str, parsed: ExtendCommand) -> Reply:
        request = self.store.get(parsed.request_id)
        if user != request.requester:
            raise CommandError(f"only <@{request.requester}>, who asked for {request.id}, can extend it")
        target = self.policy.target_for(request.target)
        if target is None or request.ends_at is None or request.status is not Status.GRANTED:
            raise CommandError(f"{request.id} is {request.status}, not granted; there is nothing to extend")
        commands.check_duration(request.target, target, parsed.duration)
        new_end = request.ends_at + parsed.duration
        if new_end - self.clock() > target.max_duration:
            raise CommandError(
                f"that would end {request.id} more than {format_duration(target.max_duration)} from now, "
                f"the most `{request.target}` allows"
            )
        try:
            _, after = self.store.transition(
                request.id, lambda r: requests.request_extension(r, parsed.duration, parsed.reason, self.clock())
            )
        except TransitionError as err:
            raise CommandError(str(err)) from None
        self.audit.request_event(
            "extension.requested", after, actor=user, extra_seconds=parsed.duration, extension_reason=parsed.reason
        )
        channel = self.policy.channel_for(target)
        return Reply(
            f"Asked to extend `{request.id}` by {format_duration(parsed.duration)}; "
            f"waiting for approval in <#{channel}>.",
            lambda: self._post_extension(after, channel),
        )

    def _post_extension(self, request: AccessRequest, channel: str) -> None:
        card_ts = self.notifier.post_extension_card(request, channel)
        if card_ts is None or request.extension is None:
            return
        extension = request.extension.model_copy(update={"card_channel": channel, "card_ts": card_ts})
        after = self.store.update(request.id, extension=extension)
        self.notifier.thread(after, blocks.extension_requested_text(after))

    def _enqueue(self, job: str, *args: str, job_id: str) -> bool:
        """Queue a worker job; False when Redis refused, which the caller's fallback covers."""
        try:
            self.queue.enqueue(JOBS + job, *args, job_id=job_id)
        except RedisError as err:
            log.error("could not queue a job", job=job, job_id=job_id, error=str(err))
            return False
        return True

    def _visible(self, user: str) -> list[AccessRequest]:
        def sees(request: AccessRequest) -> bool:
            target = self.policy.target_for(request.target)
            return request.requester == user or (target is not None and user in self.notifier.expand(target.approvers))

        return [request for request in self.store.open_requests() if sees(request)]

    # --- buttons ----------------------------------------------------------------------------

    def decide(self, user: str, action_id: str, value: str, channel: str, message_ts: str) -> None:
        """Judge one click on an approval card; a click that does not count is refused and audited."""
        try:
            request, is_extension = self._card_request(value, channel, message_ts)
            target = self.policy.target_for(request.target)
            if user == request.requester:
                raise ApprovalError("you cannot approve or deny your own request")
            if target is None or user not in self.notifier.expand(target.approvers):
                raise ApprovalError(f"you are not an approver of `{request.target}`")
            if action_id not in {ActionId.APPROVE, ActionId.DENY}:
                raise ApprovalError(f"unknown action `{action_id[:40]}`")
            approve = action_id == ActionId.APPROVE
            if is_extension:
                (self._approve_extension if approve else self._deny_extension)(user, request)
            else:
                (self._approve if approve else self._deny)(user, request)
        except StoreUnavailableError:
            self.notifier.ephemeral(channel, user, UNAVAILABLE)
        except (ApprovalError, TransitionError, NotFoundError) as err:
            known = self.store.find(value) if _looks_like_id(value) else None
            self.audit.record(
                "approval.refused",
                actor=user,
                request_id=known.id if known else None,
                target=known.target if known else None,
                action=action_id[:40],
                value=value[:64],
                why=str(err),
            )
            self.notifier.ephemeral(channel, user, blocks.refusal_text(str(err)))

    def _card_request(self, value: str, channel: str, message_ts: str) -> tuple[AccessRequest, bool]:
        """The request a card's button names, and whether the card is its extension card."""
        if not _looks_like_id(value):
            raise ApprovalError("this button does not name a request")
        request = self.store.get(value)
        deadline = time.monotonic() + CARD_RECORD_WAIT
        while request.card_ts is None and request.status is Status.PENDING and time.monotonic() < deadline:
            # The worker that posted the card records where it is a moment after Slack shows it.
            time.sleep(0.05)
            request = self.store.get(value)
        if (request.card_channel, request.card_ts) == (channel, message_ts):
            return request, False
        extension = request.extension
        if extension is not None and (extension.card_channel, extension.card_ts) == (channel, message_ts):
            return request, True
        if any((done.card_channel, done.card_ts) == (channel, message_ts) for done in request.extensions):
            raise TransitionError(f"this extension of {request.id} was already decided")
        raise ApprovalError(f"this card is not an approval card of {request.id}")

    def _approve(self, user: str, request: AccessRequest) -> None:
        _, after = self.store.transition(request.id, lambda r: requests.approve(r, user, self.clock()))
        self.audit.request_event(
            "request.approved",
            after,
            actor=user,
            approvals=len(after.approvals),
            required=after.approvals_required,
        )
        if after.status is Status.APPROVED:
            # If this is lost, the sweep re-enqueues approved requests that were not granted in time.
            self._enqueue("grant_access", after.id, job_id=f"grant-{after.id}")
            self.notifier.dm(
                after.requester,
                f":white_check_mark: `{after.id}` was approved by "
                f"{', '.join(f'<@{u}>' for u in after.approvers)}; access is being granted.",
            )
        self.notifier.update_card(after)
        self.notifier.thread(after, blocks.approval_text(after, user))

    def _approve_extension(self, user: str, request: AccessRequest) -> None:
        pending = request.extension
        _, after = self.store.transition(request.id, lambda r: requests.approve_extension(r, user, self.clock()))
        decided = after.extensions[-1] if after.extension is None else None
        self.audit.request_event(
            "extension.approved",
            after,
            actor=user,
            extra_seconds=pending.duration_seconds if pending else None,
            done=decided is not None,
        )
        if decided is not None:
            # If this is lost, the sweep sees the markers behind Redis's end and moves them.
            self._enqueue("extend_access", after.id, job_id=f"extend-{after.id}-{len(after.extensions)}")
        self.notifier.update_extension_card(after, decided or after.extension)
        self.notifier.thread(after, blocks.extension_approval_text(after, user, decided is not None))

    def _deny_extension(self, user: str, request: AccessRequest) -> None:
        _, after = self.store.transition(request.id, lambda r: requests.deny_extension(r, user, self.clock()))
        self.audit.request_event("extension.denied", after, actor=user)
        self.notifier.update_extension_card(after, after.extensions[-1])
        text = blocks.extension_denied_text(after, user)
        self.notifier.thread(after, text)
        self.notifier.dm(after.requester, text)

    def _deny(self, user: str, request: AccessRequest) -> None:
        _, after = self.store.transition(request.id, lambda r: requests.deny(r, user, self.clock()))
        self.audit.request_event("request.denied", after, actor=user)
        self.notifier.update_card(after)
        self.notifier.thread(after, blocks.denied_text(after))
        self.notifier.dm(after.requester, blocks.denied_text(after))


def _looks_like_id(value: str) -> bool:
    return bool(re.fullmatch(requests.ID_PATTERN, value))


def _target_word(text: str) -> str | None:
    words = text.split()
    return words[1].lower()[:64] if len(words) > 1 and words[0].lower() == "request" else None
