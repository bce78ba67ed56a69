"""The request and extend modals and the App Home: the same requests and checks as `/jit`, through forms.

A submission with a bad value is answered with errors by block, and nothing is stored; a good
one goes through `CommandService`, the command's own code path and checks, and its answer (which
a modal cannot show) is sent to the person as a DM.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import timedelta

from bot.service.background import after_answer
from bot.service.commands import CommandService
from bot.service.common import Reply, altered, issued, show_home
from bot.service.decisions import DecisionService
from bot.service.mfa import MfaService, Verified
from jit_lb.access import commands
from jit_lb.access.commands import BreakGlassCommand, ExtendCommand, RequestCommand
from jit_lb.access.durations import parse_duration
from jit_lb.access.errors import CommandError, JitError, NotFoundError
from jit_lb.access.policy import Target, host_address
from jit_lb.access.requests import ID_PATTERN, AccessRequest, Status, target_fields
from jit_lb.access.schedules import parse_start
from jit_lb.access.stepup import (
    ApproveIntent,
    BreakGlassIntent,
    EnrollIntent,
    ExtendIntent,
    LockdownOffIntent,
    RequestIntent,
)
from jit_lb.runtime import Runtime
from slack_out import sentences, views
from slack_out.ids import ActionId, CallbackId
from slack_out.poster import Notifier
from slack_out.views import View

Errors = dict[str, str]


class FormService:
    """What the modals and the App Home do; built on the command service so that both judge alike."""

    def __init__(
        self,
        rt: Runtime,
        notifier: Notifier,
        commands_service: CommandService,
        decisions: DecisionService,
        mfa: MfaService,
    ) -> None:
        self.rt = rt
        self.notifier = notifier
        self.commands = commands_service
        self.decisions = decisions
        self.mfa = mfa

    # --- the request modal ------------------------------------------------------------------------

    def request_view(self, user: str, selected: str | None = None) -> View:
        """The request modal with the targets `user` may request (the shortcut and a bare `/jit` open it)."""
        targets = self.rt.approvers.targets_for(user)
        return views.request_modal(targets, selected, lambda target: self.rt.approvers.named(target, user))

    def rerequest_view(self, user: str, request_id: str) -> View | None:
        """Request again: the request modal filled in with an earlier request's targets, duration and reason.

        Only its requester may; a target they may no longer request opens nothing. Either refusal is a DM
        saying why, and a refused click is recorded as a refused command is.
        """
        parts = self._parts_or_none(request_id) if re.fullmatch(ID_PATTERN, request_id) else []
        request = parts[0] if parts else None
        targets = self.rt.approvers.targets_for(user)
        names = list(request.group_targets or (request.target,)) if request is not None else []
        gone = [name for name in names if name not in targets]
        why = None
        if request is None or request.requester != user:
            why = f"there is no request of yours `{request_id[:20]}` to ask for again"
        elif gone:
            why = f"you may no longer request `{gone[0]}`"
        if request is None or why is not None:
            about = request.visible_id if request is not None else None  # another's request: named in the record
            text = f"request again {request_id[:20]}"
            refused = self.commands.failed(user, text, CommandError(why or ""), request_id=about)
            self.notifier.dm(user, refused.text)
            return None
        added = sum(e.duration_seconds for e in request.extensions if e.outcome == "approved")
        asked = request.duration_seconds - added  # as first asked, before extensions
        named = self.rt.approvers.named
        return views.request_modal(
            targets, names, lambda target: named(target, user), timedelta(seconds=asked), request.reason
        )

    def _parts_or_none(self, request_id: str) -> list[AccessRequest]:
        try:
            return self.rt.store.parts(request_id)
        except NotFoundError:
            return []

    async def submit_request(self, user: str, values: dict[str, str]) -> Errors | View | None:
        """A `jit_request` submission: errors by block, the step-up modal to replace it with, or None once the
        request is made (and the person told).

        The checks run in a thread (a usergroup may have to be read); the request is made on the event
        loop through the command's own path; the DM follows the answer.
        """
        errors, command = await asyncio.to_thread(self._check_request, user, values)
        if command is None:
            return errors
        try:
            await self.commands.count(user)
            reply = await self.commands.request(user, command, None)
        except JitError as err:
            errors = {"reason": sentences.error_reply(err, bare=True)}
            return await asyncio.to_thread(self._refused, user, values, errors)
        if reply.view is not None:
            return reply.view  # the target requires a code: the form becomes the step-up modal
        after_answer(self.notifier.dm, user, reply.text)
        return None

    # --- after a step-up --------------------------------------------------------------------------

    async def submit_code(self, user: str, metadata: str, code: str) -> Errors | None:
        """A `jit_mfa` submission: errors on `code`, or None once the code unlocked what it was for.

        A request is made on the event loop; an approval or an extension is judged after the answer.
        """
        result = await asyncio.to_thread(self.mfa.verify, user, metadata, code)
        if not isinstance(result, Verified):
            return result
        intent = result.intent
        if isinstance(intent, EnrollIntent):
            after_answer(
                self.notifier.dm,
                user,
                ":white_check_mark: Enrolled: jit-lb will ask for a code when a target needs one.",
            )
            if result.enrolled:  # trust on first enrolment: the approvers see who enrolled, and can ask
                after_answer(self.notifier.post, self.rt.policy.approver_channel, sentences.mfa_enrolled_post(user))
        elif isinstance(intent, RequestIntent):
            after_answer(self.notifier.dm, user, await self._request_after_code(user, intent))
        elif isinstance(intent, ApproveIntent):
            after_answer(self.decisions.decide, user, ActionId.APPROVE, intent.request, intent.card, None, True)
        elif isinstance(intent, ExtendIntent):
            command = ExtendCommand(intent.request, intent.duration, intent.reason)
            after_answer(self._answer, user, f"extend {intent.request}", self._extend(user, command))
        elif isinstance(intent, BreakGlassIntent):
            glass = BreakGlassCommand(intent.target, intent.duration, intent.reason)
            after_answer(self._answer, user, f"breakglass {intent.target}", self._breakglass(user, glass))
        elif isinstance(intent, LockdownOffIntent):
            after_answer(self._answer, user, "lockdown off", lambda: self.commands.lift_lockdown(user, mfa=True))
        else:
            reset = intent.user
            after_answer(self._answer, user, f"mfa reset {reset}", lambda: Reply(self.mfa.do_reset(user, reset)))
        return None

    async def _request_after_code(self, user: str, intent: RequestIntent) -> str:
        command = RequestCommand(intent.target, intent.duration, intent.ip, intent.reason, intent.at)
        try:
            return (await self.commands.request(user, command, intent.channel, mfa=True)).text
        except JitError as err:
            return (await asyncio.to_thread(self.commands.failed, user, f"request {intent.target}", err)).text

    def _breakglass(self, user: str, command: BreakGlassCommand) -> Callable[[], Reply]:
        return lambda: self.commands.breakglass(user, command, mfa=True)

    def _extend(self, user: str, command: ExtendCommand) -> Callable[[], Reply]:
        return lambda: self.commands.extend(user, command, mfa=True)

    def _check_request(self, user: str, values: dict[str, str]) -> tuple[Errors, RequestCommand | None]:
        """A submission's values judged as the command's would be, each selected target by its own policy: errors by
        block, or the command. The target select may send one target (`static_select`) or several joined."""
        targets = self.rt.approvers.targets_for(user)
        try:
            names = commands.parse_targets(values.get("target", "")).split(",")
        except CommandError as err:
            return self._refused(user, values, {"target": sentences.error_reply(err, bare=True)}), None
        unknown = [name for name in names if name not in targets]
        if unknown:
            why = f"you may not request `{unknown[0][:64]}`; pick one of the list"
            return self._refused(user, values, {"target": why}), None
        errors: Errors = {}
        duration = None
        reason = " ".join(values.get("reason", "").split())
        ip = values.get("ip", "").strip() or None
        at = values.get("start", "").strip() or None
        try:
            duration = parse_duration(values.get("duration", ""))
        except ValueError as err:
            errors["duration"] = str(err)
        if not reason:
            errors["reason"] = "say why you need access"
        elif len(reason) > views.MAX_REASON:
            errors["reason"] = f"keep it under {views.MAX_REASON} characters"
        for name in names:
            for block, why in self._target_errors(
                name, targets[name], duration, reason, ip, at, len(names) > 1
            ).items():
                errors.setdefault(block, why)
        if errors:
            return self._refused(user, values, errors), None
        return {}, RequestCommand(",".join(names), duration, ip, reason, at)

    def _target_errors(
        self,
        name: str,
        target: Target,
        duration: timedelta | None,
        reason: str,
        ip: str | None,
        at: str | None,
        several: bool,
    ) -> Errors:
        """What one selected target refuses of a submission, by block."""
        errors: Errors = {}
        if duration is not None:
            try:
                commands.check_duration(name, target, duration)
            except CommandError as err:
                errors["duration"] = sentences.error_reply(err, bare=True)
        if reason and not target.matches_reason(reason):
            hint = target.reason_hint or f"the reason must match `{target.reason_pattern}`"
            errors["reason"] = f"`{name}`: {hint}" if several else hint
        if ip is not None:
            try:
                if not target.allow_requester_ip:
                    raise ValueError(f"`{name}` does not let requesters name an address")
                host_address(ip, allow_private=target.allow_private_ip)
            except ValueError as err:
                errors["ip"] = str(err)
        if at is not None and duration is not None:
            try:
                start = parse_start(at, self.commands.clock(), self.rt.policy.limits.schedule_ahead)
                commands.check_window_freeze(self.rt.policy, name, start, start + duration)
            except CommandError as err:
                errors["start"] = sentences.error_reply(err, bare=True)
        return errors

    def _refused(self, user: str, values: dict[str, str], errors: Errors) -> Errors:
        """Record a submission that was refused (as a refused command is), and hand its errors back."""
        self.rt.audit.record(
            "request.refused",
            actor=user,
            **target_fields(values.get("target", "")[:400] or None),
            via="modal",
            text=json.dumps(values)[:500],
            why="; ".join(f"{block}: {message}" for block, message in errors.items()),
            must=True,
        )
        return errors

    # --- the App Home -----------------------------------------------------------------------------

    def home_opened(self, user: str, event_id: str | None) -> None:
        """Queue the publish of `user`'s home for a worker (workers/homes.py, the one writer of every home); from now
        on it is published again whenever what it shows changes."""
        if event_id is not None and not self.rt.store.first_delivery(event_id):
            return  # Slack retried an event we already handled
        if self.rt.store.home_opened(user):  # one publish queued a person at a time, however often it is opened
            show_home(self.rt, user)

    def home_revoke(self, user: str, request_id: str) -> None:
        """The home's End now: `/jit revoke`, answered by DM."""
        self._answer(user, f"revoke {request_id}", lambda: self.commands.revoke(user, request_id))

    def home_cancel(self, user: str, request_id: str) -> None:
        """The home's Cancel: `/jit cancel`, answered by DM."""
        self._answer(user, f"cancel {request_id}", lambda: self.commands.cancel(user, request_id))

    def extend_view(self, user: str, request_id: str) -> View | None:
        """The extend modal for the home's Extend…; None (and a DM saying why) when there is nothing to extend."""
        parts = self._parts_or_none(request_id)
        # Of a request of several targets, the modal shows a granted one; the extension asks for each (`extend`).
        request = next((part for part in parts if part.status is Status.GRANTED), parts[0] if parts else None)
        target = self.rt.policy.target_for(request.target) if request else None
        if request is None or target is None or request.requester != user or request.ends_at is None:
            self.notifier.dm(user, sentences.refusal_text(f"there is no grant of yours `{request_id}` to extend"))
            return None
        return issued(self.rt, views.extend_modal(request, target), user)

    def submit_extend(self, user: str, metadata: str, values: dict[str, str]) -> Errors | View | None:
        """A `jit_extend` submission: `/jit extend`'s checks, with errors on the block they are about."""
        why = altered(self.rt, CallbackId.EXTEND, metadata, user)
        if why is not None:
            self.commands.failed(user, f"extend (a form: {metadata[:200]})", CommandError(f"a form refused: {why}"))
            return {"reason": why}
        try:
            request_id = str(json.loads(metadata)["request"])
            duration = parse_duration(values.get("duration", ""))
        except (ValueError, KeyError, TypeError) as err:
            return {"duration": str(err)}
        reason = " ".join(values.get("reason", "").split())
        if not reason:
            return {"reason": "say why you need more time"}
        try:
            reply = self.commands.extend(user, ExtendCommand(request_id, duration, reason))
        except JitError as err:
            block = "reason" if "reason" in str(err) else "duration"
            return {block: sentences.error_reply(err, bare=True)}
        if reply.view is not None:
            return reply.view  # the target requires a code: the form becomes the step-up modal
        self.notifier.dm(user, reply.text)
        return None

    def _answer(self, user: str, text: str, act: Callable[[], Reply]) -> None:
        """Do what a home button or an accepted code asks as the command `text` would, refusals recorded alike;
        answer by DM."""
        try:
            reply = act()
        except JitError as err:
            reply = self.commands.failed(user, text, err)
        self.notifier.dm(user, reply.text)
