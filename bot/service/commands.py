"""`/jit`: parse once at the edge, then request, revoke, extend, list, targets or help; refusals are audited."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import TypeVar

import structlog

from bot.service.background import undo_later
from bot.service.common import LOCKDOWN, Reply, enqueue, tell
from bot.service.mfa import MfaService
from jit_lb.access import commands, extensions, requests
from jit_lb.access.breakglass import check_breakglass
from jit_lb.access.commands import (
    BreakGlassCommand,
    CancelCommand,
    Command,
    ExtendCommand,
    FormCommand,
    HelpCommand,
    ListCommand,
    LockdownCommand,
    MfaCommand,
    RequestCommand,
    RevokeCommand,
    TargetsCommand,
)
from jit_lb.access.errors import (
    AuditUnavailableError,
    CommandError,
    JitError,
    LimitError,
    RefusedError,
    StoreUnavailableError,
    TransitionError,
)
from jit_lb.access.policy import Target
from jit_lb.access.requests import AccessRequest, Status
from jit_lb.access.stepup import BreakGlassIntent, ExtendIntent, LockdownOffIntent, RequestIntent
from jit_lb.access.store import Counting, too_many_commands
from jit_lb.clock import utcnow
from jit_lb.runtime import Runtime
from slack_out import sentences, views

log = structlog.get_logger("jit_lb.commands")

LIST_LIMIT = 25  # lines of `/jit list`; the rest are counted


class CommandService:
    """Answers `/jit` commands; every method is quick, and `request` never leaves the event loop."""

    def __init__(self, rt: Runtime, mfa: MfaService, clock: Callable[[], datetime] = utcnow) -> None:
        self.rt = rt
        self.mfa = mfa
        self.clock = clock

    async def command(self, user: str, text: str, channel: str | None) -> Reply:
        """Answer one `/jit` command; refusals are audited and change nothing.

        `request`, the busy one, is stored through asyncio on the web's event loop (its record is
        written on the audit log's own thread), and counted in the same round trip as it is stored; the
        rest run in a thread. Every command is counted once, and one past the limit is refused as such
        whatever else is wrong with it.
        """
        try:
            try:
                parsed = commands.parse_command(text)
            except JitError:
                await self.count(user)
                raise
            if isinstance(parsed, RequestCommand):
                return await self.request(user, parsed, channel, counted=False)
            await self.count(user)
        except JitError as err:
            return await asyncio.to_thread(self.failed, user, text, err)
        return await asyncio.to_thread(self._answer, user, text, parsed, channel)

    async def count(self, user: str) -> None:
        """Count one command (or form) of `user` this minute; LimitError past `limits.commands_per_minute`."""
        limit = self.rt.policy.limits.commands_per_minute
        if await self.rt.store.count_command_async(user, self.clock()) > limit:
            raise too_many_commands(limit)

    async def request(
        self, user: str, parsed: RequestCommand, channel: str | None, mfa: bool = False, counted: bool = True
    ) -> Reply:
        """Store a request, record it, then queue its card: a request whose record cannot be written is taken back.

        On a target that requires MFA, a person not proven within `mfa.window` gets the step-up modal
        instead (`mfa` is True when this call follows an accepted code). Its card is posted by a
        worker (workers/notices.py `announce`, from the store's outbox), and pending requests are
        expired by every worker's loop. Not `counted` (a typed command): the command is counted here,
        with the store's create when it gets that far, else before the answer.
        """
        policy, store = self.rt.policy, self.rt.store
        if len(parsed.targets) > 1:
            if not counted:
                await self.count(user)
            return await self._request_several(user, parsed, channel, mfa)
        try:
            build = commands.build_request(
                policy, user, parsed, self.clock(), channel, self.rt.approvers.directory.members
            )
        except JitError:
            if not counted:
                await self.count(user)  # past the limit, that is the refusal
            raise
        target = policy.targets[parsed.target]
        if target.require_mfa and not mfa:
            if not counted:
                await self.count(user)
                counted = True
            if await asyncio.to_thread(self.mfa.due, user, target):
                return await asyncio.to_thread(self._step_up_request, user, parsed, channel)
            mfa = True  # proven within the window: the request counts as made with MFA
        counting = None if counted else Counting(user, self.clock(), policy.limits.commands_per_minute)
        # Every way in (command, form, after a code) comes through here; the store refuses it in a lockdown.
        made: list[AccessRequest] = []
        try:
            request = await store.create_async(
                _made(_with_mfa(build) if mfa else build, made), policy.limits.pending_per_user, counting
            )
        except StoreUnavailableError:
            self._undo_lost_create(made[-1:])
            raise
        try:
            await self.rt.audit.request_event_async(
                "request.created", request, actor=user, pending_until=request.pending_until, mfa=mfa or None
            )
        except AuditUnavailableError:
            try:
                await store.discard_async(request.id)
            except StoreUnavailableError:
                self._undo_lost_create([request])  # unrecorded: taken back once Redis answers, never left pending
            raise
        try:
            await store.announce_async(request.id)  # confirmed by a replica, when there are replicas
        except StoreUnavailableError:
            await self._take_back(request)
            raise
        return Reply(sentences.submitted_reply(request, policy.channel_for(policy.targets[request.target])))

    async def _request_several(self, user: str, parsed: RequestCommand, channel: str | None, mfa: bool) -> Reply:
        """A request of several targets (docs/approvals.md): each target judged by its own policy, every part stored
        at once or none, one code for all, one card a channel (posted by a worker from the group's id)."""
        policy, store = self.rt.policy, self.rt.store
        build = commands.build_group(policy, user, parsed, self.clock(), channel, self.rt.approvers.directory.members)
        asking = [policy.targets[name] for name in parsed.targets if policy.targets[name].require_mfa]
        if asking and not mfa:
            if await asyncio.to_thread(self.mfa.due, user, asking[0]):
                return await asyncio.to_thread(self._step_up_request, user, parsed, channel)
            mfa = True
        made: list[list[AccessRequest]] = []
        try:
            parts = await store.create_group_async(
                _made(_several_with_mfa(build) if mfa else build, made), policy.limits.pending_per_user
            )
        except StoreUnavailableError:
            self._undo_lost_create(made[-1] if made else [])
            raise
        group = parts[0].visible_id
        recorded: list[AccessRequest] = []
        try:
            for part in parts:
                await self.rt.audit.request_event_async(
                    "request.created", part, actor=user, pending_until=part.pending_until, mfa=mfa or None
                )
                recorded.append(part)
        except AuditUnavailableError:
            closed = recorded
            try:
                gone = await asyncio.to_thread(store.discard_group, group, [part.id for part in parts])
                closed = [part for part in recorded if part.id in gone]  # a part decided meanwhile stands as decided
            except StoreUnavailableError:
                self._undo_lost_create(parts)  # unrecorded (or closed below): taken back once Redis answers
            # A part whose request.created was written is closed in the log too, never left open there.
            await self._cancelled(closed, "the audit log failed part-way through the request's records; taken back")
            raise
        try:
            await store.announce_async(group)
        except StoreUnavailableError:
            closed = parts
            try:
                gone = await asyncio.to_thread(store.discard_group, group, [part.id for part in parts])
                closed = [part for part in parts if part.id in gone]  # a part decided meanwhile stands as decided
            except StoreUnavailableError:
                self._undo_lost_create(parts)  # its card may be queued: taken back once Redis answers
            await self._cancelled(
                closed, "no Redis replica confirmed the request; taken back, the requester was told to try again"
            )
            raise
        channels = sorted({policy.channel_for(policy.targets[part.target]) for part in parts})
        return Reply(sentences.submitted_several_reply(parts, channels))

    async def _cancelled(self, parts: list[AccessRequest], why: str) -> None:
        """The records closing the `request.created` of parts taken back (kept in the spool while the log fails)."""
        for part in parts:
            await self.rt.audit.request_event_async("request.cancelled", part, actor="system", why=why, must=True)

    async def _take_back(self, request: AccessRequest) -> None:
        """A request a replica did not confirm (a failover under way) is taken back, as if never stored, and
        the record says so; the person is told to try again. Redis away too: it expires unannounced."""
        why = "no Redis replica confirmed the request; taken back, the requester was told to try again"
        try:
            if not await self.rt.store.discard_async(request.id):
                log.warning("a request not confirmed was decided meanwhile: it stands", request_id=request.id)
                return
        except StoreUnavailableError:
            self._undo_lost_create([request])  # its card may be queued (the write's answer was lost): taken back later
        await self.rt.audit.request_event_async("request.cancelled", request, actor="system", why=why, must=True)

    def _undo_lost_create(self, made: list[AccessRequest]) -> None:
        """A new request (a group's parts) whose write's answer was lost, so that the requester is told nothing was
        requested: Redis may hold it all the same, unrecorded (its card perhaps queued), pending on approvers' App
        Homes and approvable there. It is taken back as soon as Redis answers, until it would have expired."""
        if not made:
            return
        seconds = max((made[0].pending_until - self.clock()).total_seconds(), 0.0)
        undo_later(f"the request {made[0].visible_id}", lambda: self.rt.store.take_back(made), seconds)

    def _answer(self, user: str, text: str, parsed: Command, channel: str | None) -> Reply:
        try:
            return self._dispatch(user, parsed, channel)
        except JitError as err:
            return self.failed(user, text, err)

    def _dispatch(self, user: str, parsed: Command, channel: str | None) -> Reply:
        if isinstance(parsed, RevokeCommand):
            return self.revoke(user, parsed.request_id)
        if isinstance(parsed, ExtendCommand):
            return self.extend(user, parsed)
        if isinstance(parsed, CancelCommand):
            return self.cancel(user, parsed.request_id)
        if isinstance(parsed, MfaCommand):
            return self._mfa(user, list(parsed.words))
        if isinstance(parsed, BreakGlassCommand):
            return self.breakglass(user, parsed)
        if isinstance(parsed, LockdownCommand):
            return self.lockdown(user, parsed)
        if isinstance(parsed, FormCommand):
            targets = self.rt.approvers.targets_for(user)
            return Reply("", view=views.request_modal(targets, None, lambda t: self.rt.approvers.named(t, user)))
        if isinstance(parsed, ListCommand):
            visible = self._visible(user)
            return Reply(sentences.list_text(visible[:LIST_LIMIT], more=len(visible) - LIST_LIMIT))
        if isinstance(parsed, TargetsCommand):
            return Reply(sentences.targets_text(self.rt.approvers.targets_for(user)))
        assert isinstance(parsed, HelpCommand), parsed  # a request was answered on the event loop
        return Reply(sentences.help_text(parsed.unknown))

    def _step_up_request(self, user: str, parsed: RequestCommand, channel: str | None) -> Reply:
        intent = RequestIntent(channel=channel, **asdict(parsed))  # the command's fields, and where it was typed
        view = self.mfa.step_up(user, intent, f"`{parsed.target}` asks for a one-time code before a request counts.")
        return Reply(f"`{parsed.target}` requires a one-time code: enter it in the form that opened.", view=view)

    def failed(self, user: str, text: str, err: JitError, request_id: str | None = None) -> Reply:
        """The answer to a command that changed nothing (sentences.error_reply); a refusal is recorded too, naming the
        request it was about (`request_id`, or the one a `cancel`, `revoke` or `extend` named) as `named_request`, so
        that an auditor finds someone's attempts on a request. Not as the record's own `request_id`: a refusal is no
        event of that request's life (reports and the OCSF export would read it as one), and anyone can name any id.

        Refusals past a limit are recorded once a minute and user; the rest of that minute's are
        counted, and a worker records their number when the minute is over.
        """
        if not isinstance(err, RefusedError):
            return Reply(sentences.error_reply(err))
        if isinstance(err, LimitError):
            try:
                first = self.rt.store.count_refusal(user, self.clock()) == 1
            except StoreUnavailableError:
                first = True
            if not first:
                return Reply(sentences.error_reply(err))
        self.rt.audit.record(
            "request.refused",
            actor=user,
            named_request=request_id or _request_word(text),
            **requests.target_fields(None if request_id else _target_word(text)),
            text=text[:500],
            why=str(err),
            more_counted=isinstance(err, LimitError) or None,
            must=True,
        )
        return Reply(sentences.error_reply(err))

    def revoke(self, user: str, request_id: str) -> Reply:
        """End a grant now; on a request of several targets, every target still granted that `user` may end."""
        parts = self._parts_for(user, request_id, "revoke")
        granted = [part for part in parts if part.status is Status.GRANTED]
        if not granted:
            raise CommandError(f"{request_id} is {_states(parts)}, not granted; there is nothing to revoke")
        for part in granted:
            job = f"revoke-now-{part.id}"
            if not enqueue(self.rt.queue, "revoke_access", part.id, "revoked", user, job_id=job):
                raise StoreUnavailableError("the revoke could not be queued")
        return Reply("\n".join(sentences.revoking_reply(part) for part in granted))

    def _parts_for(self, user: str, request_id: str, verb: str) -> list[AccessRequest]:
        """What `request_id` stands for (one request, or the targets of a request of several) that `user` may see:
        its requester, or an approver of the target. CommandError when none."""
        policy = self.rt.policy
        parts = self.rt.store.parts(request_id)
        seen = [part for part in parts if self.rt.approvers.may_see(user, part, policy.target_for(part.target))]
        if not seen:
            names = ", ".join(f"`{part.target}`" for part in parts)
            raise CommandError(f"only the requester or an approver of {names} can {verb} {request_id}")
        return seen

    def extend(self, user: str, parsed: ExtendCommand, mfa: bool = False) -> Reply:
        """More time on one's own grant, judged as a request is (jit_lb/access/extensions.py); on a request of
        several targets, on each target still granted, each judged by its own policy (a refusal refuses all)."""
        parts = self.rt.store.parts(parsed.request_id)
        if len(parts) > 1:
            parts = [part for part in parts if part.status is Status.GRANTED] or parts
        locked = self.rt.store.lockdown() is not None
        judged = [
            (
                part,
                extensions.check_extension(
                    self.rt.policy, self.rt.approvers, user, part, parsed.duration, parsed.reason, locked, self.clock()
                ),
            )
            for part in parts
        ]
        # All or nothing: refused up front, before any part's extension is set, when any part already has one waiting.
        waiting = [part for part in parts if part.extension is not None]
        if waiting:
            names = ", ".join(f"`{part.target}`" for part in waiting)
            raise TransitionError(
                f"{parsed.request_id} already has an extension waiting for approval on {names}; nothing was asked"
            )
        asking = [target for _, target in judged if target.require_mfa]
        if asking and not mfa and self.mfa.due(user, asking[0]):
            intent = ExtendIntent(request=parsed.request_id, duration=parsed.duration, reason=parsed.reason)
            names = ", ".join(f"`{part.target}`" for part in parts)
            view = self.mfa.step_up(user, intent, f"More time on {names} asks for a one-time code.")
            return Reply("A one-time code is due: enter it in the form that opened.", view=view)
        for part, target in judged:
            extensions.check_extension_end(part, target, parsed.duration, self.clock())
        replies = []
        for part, target in judged:
            after = self._extend_one(user, part, target, parsed)
            replies.append(sentences.extension_submitted_reply(after, self.rt.policy.channel_for(target)))
        # Its card is posted by a worker, as a new request's is: one for the targets of a request of several.
        self.rt.store.announce_later(parts[0].group or parts[0].id)
        return Reply("\n".join(dict.fromkeys(replies)))

    def _extend_one(self, user: str, request: AccessRequest, target: Target, parsed: ExtendCommand) -> AccessRequest:
        def extension(current: AccessRequest) -> AccessRequest:
            # On a target that requires MFA this is reached only after a code (or within its window).
            with_mfa = target.require_mfa
            return requests.request_extension(current, parsed.duration, parsed.reason, self.clock(), with_mfa)

        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event(
                "extension.requested",
                after,
                actor=user,
                extra_seconds=parsed.duration,
                extension_reason=parsed.reason,
                mfa=target.require_mfa or None,  # reached here on such a target only after a step-up
            )

        return self.rt.store.transition(request.id, extension, record)[1]

    def _mfa(self, user: str, words: list[str]) -> Reply:
        reply = self.mfa.command(user, words)
        if reply.view is not None and [w.lower() for w in words[:1]] == [
            "enroll"
        ]:  # its DM (the QR code) goes once the modal is open
            return Reply(reply.text, reply.view, then=lambda: self.mfa.send_enrolment(user))
        return reply

    def breakglass(self, user: str, parsed: BreakGlassCommand, mfa: bool = False) -> Reply:
        """Emergency access without approval (docs/operating.md): applied at once, announced, reviewed afterwards."""
        policy = self.rt.policy
        members = self.rt.approvers.directory.members
        locked = self.rt.store.lockdown() is not None
        target, rules = check_breakglass(policy, user, parsed.target, parsed.duration, members, locked)
        if target.require_mfa and not mfa and self.mfa.due(user, target):
            intent = BreakGlassIntent(target=parsed.target, duration=parsed.duration, reason=parsed.reason)
            view = self.mfa.step_up(user, intent, f"Break-glass on `{parsed.target}` asks for a one-time code.")
            return Reply("A one-time code is due: enter it in the form that opened.", view=view)
        command = RequestCommand(parsed.target, parsed.duration, None, parsed.reason)
        # Its own limits (max_duration above), not the target's requesters or freezes: that is what break-glass is.
        members = self.rt.approvers.directory.members
        build = commands.build_request(policy, user, command, self.clock(), None, members, emergency=True)
        # On a target that requires MFA this is reached only after a code (or within its window).
        made: list[AccessRequest] = []
        try:
            request = self.rt.store.create(_made(_with_mfa(build) if target.require_mfa else build, made))
        except StoreUnavailableError:
            self._undo_lost_create(made[-1:])
            raise

        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event(
                "grant.breakglass", after, actor=user, review_within=rules.review_within, mfa=target.require_mfa or None
            )

        try:
            self.rt.audit.request_event(
                "request.created", request, actor=user, break_glass=True, mfa=target.require_mfa or None
            )
            _, after = self.rt.store.transition(
                request.id, lambda r: requests.break_glass(r, user, self.clock()), record
            )
        except (AuditUnavailableError, TransitionError):
            # Nothing half-done: a break-glass request that skipped the normal checks never stays pending.
            self.rt.store.discard(request.id)
            raise
        # Announced, reviewed and unmarked in one step: a web stopped before it leaves the mark, and a worker does it.
        self.rt.store.breakglass_granted(after.id, self.clock() + rules.review_within)
        enqueue(self.rt.queue, "grant_access", after.id, job_id=f"grant-{after.id}")
        return Reply(sentences.breakglass_reply(after))

    def lockdown(self, user: str, parsed: LockdownCommand) -> Reply:
        """`/jit lockdown on|off|status`: admins end every grant and refuse new ones until they lift it."""
        store = self.rt.store
        if parsed.action == "status":
            return Reply(sentences.lockdown_status_text(store.lockdown()))
        if not self.rt.approvers.is_admin(user):
            raise CommandError("only an admin of jit-lb (`admins` in the policy) can turn a lockdown on or off")
        if parsed.action == "on":
            already = store.start_lockdown(user, self.clock(), parsed.reason)
            if already is not None:
                return Reply(sentences.lockdown_status_text(already))
            # It goes ahead whatever the log does: it only takes access away. The workers end every grant: their
            # loops look every second, and this job starts them now.
            self.rt.audit.record("lockdown.started", actor=user, target=None, why=parsed.reason, must=True)
            enqueue(
                self.rt.queue, "enforce_lockdown", job_id=f"lockdown-{int(self.clock().timestamp())}", module=LOCKDOWN
            )
            return Reply(sentences.lockdown_started_text(user, parsed.reason))
        if store.lockdown() is None:
            raise CommandError("there is no lockdown to lift")
        if any(t.require_mfa for t in self.rt.policy.targets.values()) and self.rt.mfa.proven_for(user) is None:
            # Where step-up MFA is in use, an admin's Slack session alone does not reopen access after a lockdown.
            what = "Lifting the lockdown reopens access: it asks for a one-time code from you."
            view = self.mfa.step_up(user, LockdownOffIntent(), what)
            return Reply("Lifting a lockdown asks for your one-time code: enter it in the form that opened.", view=view)
        return self.lift_lockdown(user)

    def lift_lockdown(self, user: str, mfa: bool = False) -> Reply:
        """End the lockdown (recorded first: lifting opens access again, so it never happens without its record)."""
        if not self.rt.approvers.is_admin(user):
            raise CommandError("only an admin of jit-lb (`admins` in the policy) can turn a lockdown on or off")
        current = self.rt.store.lockdown()
        if current is None:
            raise CommandError("there is no lockdown to lift")
        self.rt.audit.record(
            "lockdown.ended",
            actor=user,
            target=None,
            started_by=current.by,
            started_at=current.at,
            why=current.reason,
            mfa=mfa or self.rt.mfa.proven_for(user) is not None or None,
        )
        self.rt.store.end_lockdown()
        return Reply(sentences.lockdown_ended_text(user, current))

    def cancel(self, user: str, request_id: str) -> Reply:
        """Withdraw one's own pending request, or a scheduled one before its start (on a request of several targets,
        every target still open to it): recorded, then its card, thread and home are told by a worker."""
        parts = self.rt.store.parts(request_id)
        if user != parts[0].requester:
            raise CommandError(f"only <@{parts[0].requester}>, who asked for {request_id}, can cancel it")
        if len(parts) > 1:
            open_ = [part for part in parts if part.status is Status.PENDING or part.waits_for_start]
            if not open_:
                raise CommandError(f"{request_id} is {_states(parts)}: nothing is left to cancel")
            parts = open_
        if self.rt.store.unrecorded(parts[0]):  # as an approval or a denial is: nothing recorded before its creation
            raise CommandError(f"{request_id} is not recorded yet, so it cannot be cancelled; try again in a moment")

        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event("request.cancelled", after, actor=user, why="withdrawn by the requester")

        done = []
        for part in parts:
            _, after = self.rt.store.transition(
                part.id, lambda r: requests.cancel(r, "withdrawn by the requester", self.clock(), by=user), record
            )
            tell(self.rt, after.id, "cancelled")
            done.append(sentences.cancelled_text(after))
        return Reply("\n".join(done))

    def _visible(self, user: str) -> list[AccessRequest]:
        policy, approvers = self.rt.policy, self.rt.approvers
        return [r for r in self.rt.store.open_requests() if approvers.may_see(user, r, policy.target_for(r.target))]


T = TypeVar("T")


def _made(build: Callable[[str], T], made: list[T]) -> Callable[[str], T]:
    """`build`, keeping what it built last in `made` (what a write whose answer was lost may have stored)."""

    def building(request_id: str) -> T:
        made.append(build(request_id))
        return made[-1]

    return building


def _with_mfa(build: Callable[[str], AccessRequest]) -> Callable[[str], AccessRequest]:
    """The same request, marked as made after a step-up."""

    def marked(request_id: str) -> AccessRequest:
        return build(request_id).model_copy(update={"requested_with_mfa": True})

    return marked


def _states(parts: list[AccessRequest]) -> str:
    """Where a request stands, for a refusal: its status, or each target's on a request of several."""
    if len(parts) == 1:
        return str(parts[0].status)
    return ", ".join(f"{part.status} on `{part.target}`" for part in parts)


def _several_with_mfa(build: Callable[[str], list[AccessRequest]]) -> Callable[[str], list[AccessRequest]]:
    """The same parts, marked as made after a step-up."""

    def marked(group: str) -> list[AccessRequest]:
        return [part.model_copy(update={"requested_with_mfa": True}) for part in build(group)]

    return marked


def _target_word(text: str) -> str | None:
    words = text.split()
    return words[1].lower()[:64] if len(words) > 1 and words[0].lower() == "request" else None


def _request_word(text: str) -> str | None:
    """The request a refused `cancel`, `revoke` or `extend` named, when it names one by a well-formed id."""
    words = text.lower().split()
    named = words[1] if len(words) > 1 and words[0] in ("cancel", "revoke", "extend") else ""
    return named if re.fullmatch(requests.ID_PATTERN, named) else None
