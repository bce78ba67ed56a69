"""Decisions on requests: clicks on approval cards and on the App Home, and the deny modal; each counts once.

Who may decide is judged here, the same way wherever the click comes from: an approver of the
target who is not its requester, on a request still open to a decision. A card's button must be
on that request's card; the App Home's buttons name the request alone (`card=None`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.service.common import altered, enqueue, issued, looks_like_id, tell
from bot.service.mfa import MfaService
from jit_lb.access import requests
from jit_lb.access.errors import ApprovalError, JitError, NotFoundError, RefusedError, TransitionError
from jit_lb.access.requests import AccessRequest, Status
from jit_lb.access.stepup import ApproveIntent
from jit_lb.clock import utcnow
from jit_lb.runtime import Runtime
from slack_out import sentences, views
from slack_out.ids import ActionId, CallbackId
from slack_out.poster import Notifier
from slack_out.views import View

CARD_RECORD_WAIT = 2.0  # seconds a click may wait for the card's position to be recorded
Card = tuple[str, str]  # where a card is: (channel, message ts)


@dataclass(frozen=True)
class DenyOrder:
    """A denial submitted through the deny modal: its private_metadata read back, and the reason."""

    request_id: str
    card: Card | None
    reason: str | None


class DecisionService:
    """Judges clicks on approval cards; a click that does not count is refused, audited, and changes nothing."""

    def __init__(
        self, rt: Runtime, notifier: Notifier, mfa: MfaService, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.rt = rt
        self.notifier = notifier
        self.mfa = mfa
        self.clock = clock

    def decide(
        self,
        user: str,
        action_id: str,
        value: str,
        card: Card | None,
        reason: str | None = None,
        mfa: bool = False,
    ) -> None:
        """Judge one click (or a deny modal's submission, with its `reason`; or a step-up's approval, with `mfa`)."""
        try:
            clicked, is_extension = self._clicked(value, card)
            parts = self._decidable(user, clicked, is_extension)
            if action_id not in {ActionId.APPROVE, ActionId.DENY}:
                raise ApprovalError(f"unknown action `{action_id[:40]}`")
            if action_id == ActionId.DENY:
                self._deny_all(user, parts, is_extension, reason)
                return
            if self.rt.store.lockdown() is not None:
                raise ApprovalError("jit-lb is locked down: no approval counts until an admin lifts it")
            # One code covers the click, on every target; a target wanting a code the click has not got does not
            # count (named to the clicker), the targets of the click that want none still do.
            refusals: list[JitError] = []
            unproven: list[JitError] = []
            proven: list[tuple[AccessRequest, bool]] = []
            for part in parts:
                try:
                    proven.append((part, self._stepped_up(user, part, mfa)))
                except ApprovalError as err:
                    unproven.append(err)
            for part, with_mfa in proven:
                try:
                    (self._approve_extension if is_extension else self._approve)(user, part, with_mfa)
                except (ApprovalError, TransitionError) as err:
                    refusals.append(err)  # another target of the click may still count
            if len(refusals) == len(proven):
                raise (unproven or refusals)[0]
            if unproven:
                self._refused(user, action_id, value, unproven[0], card)
        except JitError as err:
            self._refused(user, action_id, value, err, card)

    def _clicked(self, value: str, card: Card | None) -> tuple[list[AccessRequest], bool]:
        """What a click names: the request (every target of a request of several), and whether the decision is on a
        pending extension. A card's button must be on one of that request's cards."""
        if not looks_like_id(value):
            raise ApprovalError("this button does not name a request")
        if not self.rt.store.is_group(value):
            request, is_extension = self._card_request(value, *card) if card else self._home_request(value)
            return [request], is_extension
        parts = self.rt.store.parts(value)
        if card is None:
            pending = [part for part in parts if part.status is Status.PENDING]
            extending = [part for part in parts if part.status is Status.GRANTED and part.extension is not None]
            if not pending and not extending:
                raise TransitionError(f"{value} is already decided on every target")
            return (pending, False) if pending else (extending, True)
        deadline = time.monotonic() + CARD_RECORD_WAIT
        while any(_card_unrecorded(part) for part in parts) and time.monotonic() < deadline:
            time.sleep(0.05)  # the worker posting the cards records where each is a moment after Slack shows it
            parts = self.rt.store.parts(value)
        if any((part.card_channel, part.card_ts) == card for part in parts):
            return parts, False
        extending = [
            part
            for part in parts
            if part.extension is not None and (part.extension.card_channel, part.extension.card_ts) == card
        ]
        if extending:
            return extending, True
        raise ApprovalError(f"this card is not an approval card of {value}")

    def _decidable(self, user: str, parts: list[AccessRequest], is_extension: bool) -> list[AccessRequest]:
        """The targets of the click that `user` may decide: an approver of each, never the requester. Of a request
        of several targets, those still waiting for a decision; ApprovalError when `user` may decide none."""
        if len(parts) == 1 and not parts[0].group:
            self._check_decider(user, parts[0])
            return parts
        if user == parts[0].requester:
            raise ApprovalError("you cannot approve or deny your own request")
        policy = self.rt.policy
        theirs = [part for part in parts if self.rt.approvers.may_approve(user, policy.target_for(part.target))]
        if not theirs:
            names = ", ".join(f"`{part.target}`" for part in parts)
            raise ApprovalError(f"you are not an approver of any target of {parts[0].visible_id} ({names})")
        if is_extension:
            return [part for part in theirs if part.extension is not None] or theirs
        open_ = [part for part in theirs if part.status is Status.PENDING]
        if not open_:
            raise TransitionError(f"{parts[0].visible_id} is already decided on every target you may approve")
        return open_

    def review(self, user: str, action_id: str, value: str, card: Card | None) -> None:
        """An approver's review of a break-glass grant: acknowledged, or flagged (and the admins are told)."""
        verdict = "acknowledged" if action_id == ActionId.REVIEW_OK else "flagged"
        try:
            if not looks_like_id(value):
                raise ApprovalError("this button does not name a request")
            request = self.rt.store.get(value)
            self._check_decider(user, request)

            def record(_: AccessRequest, after: AccessRequest) -> None:
                self.rt.audit.request_event(f"review.{verdict}", after, actor=user)

            _, after = self.rt.store.transition(request.id, lambda r: requests.review(r, user, verdict), record)
        except JitError as err:
            self._refused(user, action_id, value, err, card)
            return
        self.rt.store.reviewed(after.id)
        tell(self.rt, after.id, "reviewed", who=user)

    def approve_form(self, user: str, value: str, card: Card | None) -> View | None:
        """The step-up modal for this Approve, when a target it counts for requires MFA and the approver is not
        proven now (one code covers every target of the click)."""
        try:
            clicked, is_extension = self._clicked(value, card)
            parts = self._decidable(user, clicked, is_extension)
            policy = self.rt.policy
            if not any(self.mfa.due(user, policy.target_for(part.target)) for part in parts):
                return None
            intent = ApproveIntent(request=value, card=card)
            names = ", ".join(f"`{part.target}`" for part in parts)
            what = f"Approving `{value}` on {names} asks for a one-time code."
            return self.mfa.step_up(user, intent, what)
        except JitError:
            return None  # `decide` refuses it, with the same words, and records why

    def _stepped_up(self, user: str, request: AccessRequest, mfa: bool) -> bool:
        """Whether this approval counts as made with MFA; ApprovalError when the target wants a code and has none."""
        target = self.rt.policy.target_for(request.target)
        if target is None or not target.require_mfa:
            return mfa
        if mfa or not self.mfa.due(user, target):
            return True
        enrolment = self.rt.mfa.enrolment(user)
        if enrolment is None or not enrolment.confirmed:
            raise ApprovalError(
                f"`{request.target}` requires a one-time code to approve, and you are not enrolled: "
                "`/jit mfa enroll` sets it up"
            )
        raise ApprovalError(f"`{request.target}` requires a one-time code to approve: click Approve again to enter it")

    def deny_form(self, user: str, value: str, card: Card | None) -> View | None:
        """The deny modal for this click, when a target it denies asks whoever denies why; None: deny (or refuse) at
        once."""
        try:
            clicked, is_extension = self._clicked(value, card)
            parts = self._decidable(user, clicked, is_extension)
        except JitError:
            return None  # `decide` refuses it, with the same words, and records why
        if not is_extension and self.rt.store.unrecorded(parts[0]):
            return None  # not recorded yet: `decide` refuses it at once, rather than after a reason is typed
        targets = [self.rt.policy.target_for(part.target) for part in parts]
        asks = [target for target in targets if target is not None and target.deny_reason != "none"]
        if is_extension or not asks:
            return None
        required = any(target.deny_reason == "required" for target in asks)
        return issued(self.rt, views.deny_modal(parts[0], required, card), user)

    def check_deny(self, user: str, metadata: str, values: dict[str, str]) -> tuple[dict[str, str], DenyOrder | None]:
        """A `jit_deny` submission read: errors by block, or what to decide (the caller acks, then decides)."""
        why = altered(self.rt, CallbackId.DENY, metadata, user)
        if why is not None:
            # Recorded as a refused click is; the person sees the error on the form itself.
            self.rt.audit.record(
                "approval.refused",
                actor=user,
                action=CallbackId.DENY.value,
                value=metadata[:200],
                why=f"a form refused: {why}",
                must=True,
            )
            return {"reason": why}, None
        try:
            about = json.loads(metadata)
            request_id = str(about["request"])
            card = (str(about["card"][0]), str(about["card"][1])) if about.get("card") else None
        except (ValueError, KeyError, TypeError, IndexError):
            return {"reason": "this form does not name a request; open it again from the card"}, None
        reason = values.get("reason", "").strip()
        for request in self._parts_or_none(request_id):
            target = self.rt.policy.target_for(request.target)
            if request.status is not Status.PENDING or not self.rt.approvers.may_approve(user, target):
                continue  # a target this denial does not reach: its rule on reasons does not apply
            if target is not None and target.deny_reason == "required" and not reason:
                return {"reason": f"`{request.target}` asks whoever denies a request to say why"}, None
        if len(reason) > views.MAX_REASON:
            return {"reason": f"keep it under {views.MAX_REASON} characters"}, None
        return {}, DenyOrder(request_id, card, reason or None)

    def deny(self, user: str, order: DenyOrder) -> None:
        """Judge a deny modal's submission as its button would have been, with the reason given."""
        self.decide(user, ActionId.DENY, order.request_id, order.card, order.reason)

    def _check_decider(self, user: str, request: AccessRequest) -> None:
        if user == request.requester:
            raise ApprovalError("you cannot approve or deny your own request")
        if not self.rt.approvers.may_approve(user, self.rt.policy.target_for(request.target)):
            raise ApprovalError(f"you are not an approver of `{request.target}`")

    def _refused(self, user: str, action_id: str, value: str, err: JitError, card: Card | None) -> None:
        """A click that changed nothing: a refusal is recorded, and the clicker is told why (sentences.error_reply)."""
        if isinstance(err, RefusedError):
            known = self._parts_or_none(value) if looks_like_id(value) else []
            self.rt.audit.record(
                "approval.refused",
                actor=user,
                request_id=known[0].visible_id if known else None,
                target=known[0].target if len(known) == 1 else None,
                targets=[part.target for part in known] if len(known) > 1 else None,
                action=action_id[:40],
                value=value[:64],
                why=str(err),
                must=True,
            )
        self._tell(user, card, sentences.error_reply(err))

    def _parts_or_none(self, request_id: str) -> list[AccessRequest]:
        try:
            return self.rt.store.parts(request_id)
        except NotFoundError:
            return []

    def _tell(self, user: str, card: Card | None, text: str) -> None:
        """An answer only the clicker sees: ephemeral under the card, or a DM from the App Home."""
        if card is not None:
            self.notifier.ephemeral(card[0], user, text)
        else:
            self.notifier.dm(user, text)

    def _home_request(self, value: str) -> tuple[AccessRequest, bool]:
        """The request an App Home button names, and whether the decision is on its pending extension."""
        if not looks_like_id(value):
            raise ApprovalError("this button does not name a request")
        request = self.rt.store.get(value)
        if request.status is Status.PENDING:
            return request, False
        if request.status is Status.GRANTED and request.extension is not None:
            return request, True
        raise TransitionError(f"{request.id} is already {request.status}")

    def _card_request(self, value: str, channel: str, message_ts: str) -> tuple[AccessRequest, bool]:
        """The request a card's button names, and whether the card is its extension card."""
        if not looks_like_id(value):
            raise ApprovalError("this button does not name a request")
        request = self.rt.store.get(value)
        deadline = time.monotonic() + CARD_RECORD_WAIT
        while _card_unrecorded(request) and time.monotonic() < deadline:
            # The worker that posted the card records where it is a moment after Slack shows it.
            time.sleep(0.05)
            request = self.rt.store.get(value)
        if (request.card_channel, request.card_ts) == (channel, message_ts):
            return request, False
        extension = request.extension
        if extension is not None and (extension.card_channel, extension.card_ts) == (channel, message_ts):
            return request, True
        if any((done.card_channel, done.card_ts) == (channel, message_ts) for done in request.extensions):
            raise TransitionError(f"this extension of {request.id} was already decided")
        raise ApprovalError(f"this card is not an approval card of {request.id}")

    def _approve(self, user: str, request: AccessRequest, mfa: bool) -> None:
        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event(
                "request.approved",
                after,
                actor=user,
                approvals=len(after.approvals),
                required=after.approvals_required,
                mfa=mfa or None,
            )

        self._recorded_before(request, "approved")
        _, after = self.rt.store.transition(request.id, lambda r: requests.approve(r, user, self.clock(), mfa), record)
        if after.status is Status.APPROVED:
            # If this is lost, the sweep re-enqueues approved requests that were not granted in time.
            enqueue(self.rt.queue, "grant_access", after.id, job_id=f"grant-{after.id}")
        tell(self.rt, after.id, "approved", who=user)

    def _deny(self, user: str, request: AccessRequest, reason: str | None) -> None:
        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event("request.denied", after, actor=user, deny_reason=reason)

        _, after = self.rt.store.transition(request.id, lambda r: requests.deny(r, user, self.clock(), reason), record)
        tell(self.rt, after.id, "denied", who=user)

    def _deny_all(self, user: str, parts: list[AccessRequest], is_extension: bool, reason: str | None) -> None:
        """Deny each target of the click (or its pending extension): once the request is recorded, and with a reason
        where a target still waiting for a decision asks for one."""
        if is_extension:
            for part in parts:
                self._deny_extension(user, part)
            return
        self._recorded_before(parts[0], "denied")  # a request's parts share its mark
        if not reason:
            self._check_reason_needless([part for part in parts if part.status is Status.PENDING])
        for part in parts:
            self._deny(user, part, reason)

    def _check_reason_needless(self, parts: list[AccessRequest]) -> None:
        """ApprovalError when a target denied asks whoever denies to say why (its form asks; a click that reaches
        here without the form, as when the form was not opened for a request not yet recorded, must not skip it)."""
        for part in parts:
            target = self.rt.policy.target_for(part.target)
            if target is not None and target.deny_reason == "required":
                raise ApprovalError(f"`{part.target}` asks whoever denies a request to say why: click Deny again")

    def _recorded_before(self, request: AccessRequest, decided: str) -> None:
        """TransitionError while the request's `request.created` may not be written yet (its web is still writing it,
        or stopped first and a worker will close it on the record): no decision is recorded before its creation.
        Its mark never comes back once gone, so a decision that passes this cannot race it."""
        if self.rt.store.unrecorded(request):
            raise TransitionError(
                f"{request.visible_id} is not recorded yet, so it cannot be {decided}; try again in a moment"
            )

    def _approve_extension(self, user: str, request: AccessRequest, mfa: bool) -> None:
        pending = request.extension

        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event(
                "extension.approved",
                after,
                actor=user,
                extra_seconds=pending.duration_seconds if pending else None,
                done=after.extension is None,
                mfa=mfa or None,
            )

        _, after = self.rt.store.transition(
            request.id, lambda r: requests.approve_extension(r, user, self.clock(), mfa), record
        )
        decided = after.extensions[-1] if after.extension is None else None
        if decided is not None:
            # If this is lost, the sweep sees the markers behind Redis's end and moves them.
            enqueue(self.rt.queue, "extend_access", after.id, job_id=f"extend-{after.id}-{len(after.extensions)}")
        tell(self.rt, after.id, "extension_approved", who=user, done=decided is not None)

    def _deny_extension(self, user: str, request: AccessRequest) -> None:
        _, after = self.rt.store.transition(
            request.id,
            lambda r: requests.deny_extension(r, user, self.clock()),
            self._recorder("extension.denied", user),
        )
        tell(self.rt, after.id, "extension_denied", who=user)

    def _recorder(self, event: str, user: str) -> Callable[[AccessRequest, AccessRequest], None]:
        """A transition's record: the change counts only once its record is written."""

        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event(event, after, actor=user)

        return record


def _card_unrecorded(request: AccessRequest) -> bool:
    """Whether a card of the request is posted or about to be, but its position not yet recorded."""
    if request.status is Status.PENDING:
        return request.card_ts is None
    return request.extension is not None and request.extension.card_ts is None
