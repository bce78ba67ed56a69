"""`/jit`: parse once at the edge, then request, revoke, extend, list, targets or help; refusals are audited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from bot.messages import blocks
from bot.service.common import Reply, enqueue, utcnow
from jit_lb.access import commands, requests
from jit_lb.access.commands import (
    Command,
    ExtendCommand,
    HelpCommand,
    ListCommand,
    RequestCommand,
    RevokeCommand,
    TargetsCommand,
)
from jit_lb.access.durations import format_duration
from jit_lb.access.errors import CommandError, NotFoundError, StoreUnavailableError, TransitionError
from jit_lb.access.requests import AccessRequest, Status
from jit_lb.runtime import Runtime

# What a command may fail with and still be answered: Redis away, or a refusal.
_FAILURES = (StoreUnavailableError, CommandError, NotFoundError)


class CommandService:
    """Answers `/jit` commands; every method is quick, and `request` never leaves the event loop."""

    def __init__(self, rt: Runtime, clock: Callable[[], datetime] = utcnow) -> None:
        self.rt = rt
        self.clock = clock

    async def command(self, user: str, text: str, channel: str | None) -> Reply:
        """Answer one `/jit` command; refusals are audited and change nothing.

        `request`, the busy one, is stored through asyncio on the web's event loop; the rest run in a thread.
        """
        try:
            parsed = commands.parse_command(text)
            if isinstance(parsed, RequestCommand):
                build = commands.build_request(self.rt.policy, user, parsed, self.clock(), channel)
                return self._requested(await self.rt.store.create_async(build), user)
        except _FAILURES as err:
            return self._failed(user, text, err)
        return await asyncio.to_thread(self._answer, user, text, parsed, channel)

    def _answer(self, user: str, text: str, parsed: Command, channel: str | None) -> Reply:
        try:
            return self._dispatch(user, parsed, channel)
        except _FAILURES as err:
            return self._failed(user, text, err)

    def _dispatch(self, user: str, parsed: Command, channel: str | None) -> Reply:
        if isinstance(parsed, RevokeCommand):
            return self._revoke(user, parsed.request_id)
        if isinstance(parsed, ExtendCommand):
            return self._extend(user, parsed)
        if isinstance(parsed, ListCommand):
            return Reply(blocks.list_text(self._visible(user)))
        if isinstance(parsed, TargetsCommand):
            return Reply(blocks.targets_text(self.rt.policy, user))
        assert isinstance(parsed, HelpCommand), parsed  # a request was answered on the event loop
        return Reply(blocks.help_text(parsed.unknown))

    def _failed(self, user: str, text: str, err: Exception) -> Reply:
        """The answer to a command that changed nothing: Redis away, or a refusal (audited)."""
        if isinstance(err, StoreUnavailableError):
            return Reply(blocks.unavailable_text())
        self.rt.audit.record("request.refused", actor=user, target=_target_word(text), text=text[:500], why=str(err))
        return Reply(blocks.refusal_text(str(err)))

    def _requested(self, request: AccessRequest, user: str) -> Reply:
        """Audit a stored request and answer its requester.

        Its card is posted by a worker (workers/notices.py `announce`: the store queued the id in
        its outbox with the request), and pending requests are expired by every worker's loop.
        """
        target = self.rt.policy.targets[request.target]
        self.rt.audit.request_event("request.created", request, actor=user, pending_until=request.pending_until)
        return Reply(blocks.submitted_reply(request, self.rt.policy.channel_for(target)))

    def _revoke(self, user: str, request_id: str) -> Reply:
        request = self.rt.store.get(request_id)
        target = self.rt.policy.target_for(request.target)
        if not self.rt.approvers.may_see(user, request, target):
            raise CommandError(f"only the requester or an approver of `{request.target}` can revoke {request_id}")
        if request.status is not Status.GRANTED:
            raise CommandError(f"{request_id} is {request.status}, not granted; there is nothing to revoke")
        if not enqueue(self.rt.queue, "revoke_access", request_id, "revoked", user, job_id=f"revoke-now-{request_id}"):
            raise StoreUnavailableError("the revoke could not be queued")
        return Reply(blocks.revoking_reply(request))

    def _extend(self, user: str, parsed: ExtendCommand) -> Reply:
        request = self.rt.store.get(parsed.request_id)
        if user != request.requester:
            raise CommandError(f"only <@{request.requester}>, who asked for {request.id}, can extend it")
        target = self.rt.policy.target_for(request.target)
        if target is None or request.ends_at is None or request.status is not Status.GRANTED:
            raise CommandError(f"{request.id} is {request.status}, not granted; there is nothing to extend")
        commands.check_duration(request.target, target, parsed.duration)
        if request.ends_at + parsed.duration - self.clock() > target.max_duration:
            raise CommandError(
                f"that would end {request.id} more than {format_duration(target.max_duration)} from now, "
                f"the most `{request.target}` allows"
            )
        try:
            _, after = self.rt.store.transition(
                request.id, lambda r: requests.request_extension(r, parsed.duration, parsed.reason, self.clock())
            )
        except TransitionError as err:
            raise CommandError(str(err)) from None
        self.rt.audit.request_event(
            "extension.requested", after, actor=user, extra_seconds=parsed.duration, extension_reason=parsed.reason
        )
        # Its card is posted by a worker, as a new request's is.
        self.rt.store.announce_later(after.id)
        return Reply(blocks.extension_submitted_reply(after, self.rt.policy.channel_for(target)))

    def _visible(self, user: str) -> list[AccessRequest]:
        policy, approvers = self.rt.policy, self.rt.approvers
        return [r for r in self.rt.store.open_requests() if approvers.may_see(user, r, policy.target_for(r.target))]


def _target_word(text: str) -> str | None:
    words = text.split()
    return words[1].lower()[:64] if len(words) > 1 and words[0].lower() == "request" else None
