"""Clicks on approval cards (a request's or an extension's): who may decide is judged here, each click once."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from bot.messages import blocks
from bot.messages.ids import ActionId
from bot.messages.notify import Notifier
from bot.service.common import enqueue, looks_like_id, utcnow
from jit_lb.access import requests
from jit_lb.access.errors import (
    ApprovalError,
    AuditUnavailableError,
    NotFoundError,
    StoreUnavailableError,
    TransitionError,
)
from jit_lb.access.requests import AccessRequest, Status
from jit_lb.runtime import Runtime

CARD_RECORD_WAIT = 2.0  # seconds a click may wait for the card's position to be recorded


class DecisionService:
    """Judges clicks on approval cards; a click that does not count is refused, audited, and changes nothing."""

    def __init__(self, rt: Runtime, notifier: Notifier, clock: Callable[[], datetime] = utcnow) -> None:
        self.rt = rt
        self.notifier = notifier
        self.clock = clock

    def decide(self, user: str, action_id: str, value: str, channel: str, message_ts: str) -> None:
        """Judge one click on an approval card."""
        try:
            request, is_extension = self._card_request(value, channel, message_ts)
            if user == request.requester:
                raise ApprovalError("you cannot approve or deny your own request")
            if not self.rt.approvers.may_approve(user, self.rt.policy.target_for(request.target)):
                raise ApprovalError(f"you are not an approver of `{request.target}`")
            if action_id not in {ActionId.APPROVE, ActionId.DENY}:
                raise ApprovalError(f"unknown action `{action_id[:40]}`")
            approve = action_id == ActionId.APPROVE
            if is_extension:
                (self._approve_extension if approve else self._deny_extension)(user, request)
            else:
                (self._approve if approve else self._deny)(user, request)
        except StoreUnavailableError:
            self.notifier.ephemeral(channel, user, blocks.unavailable_text())
        except AuditUnavailableError as err:
            self.notifier.ephemeral(channel, user, blocks.refusal_text(str(err)))
        except (ApprovalError, TransitionError, NotFoundError) as err:
            known = self.rt.store.find(value) if looks_like_id(value) else None
            self.rt.audit.record(
                "approval.refused",
                actor=user,
                request_id=known.id if known else None,
                target=known.target if known else None,
                action=action_id[:40],
                value=value[:64],
                why=str(err),
                must=True,
            )
            self.notifier.ephemeral(channel, user, blocks.refusal_text(str(err)))

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

    def _approve(self, user: str, request: AccessRequest) -> None:
        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event(
                "request.approved", after, actor=user, approvals=len(after.approvals), required=after.approvals_required
            )

        _, after = self.rt.store.transition(request.id, lambda r: requests.approve(r, user, self.clock()), record)
        if after.status is Status.APPROVED:
            # If this is lost, the sweep re-enqueues approved requests that were not granted in time.
            enqueue(self.rt.queue, "grant_access", after.id, job_id=f"grant-{after.id}")
            self.notifier.dm(after.requester, blocks.approved_dm_text(after))
        self.notifier.update_card(after)
        self.notifier.thread(after, blocks.approval_text(after, user))

    def _deny(self, user: str, request: AccessRequest) -> None:
        _, after = self.rt.store.transition(
            request.id, lambda r: requests.deny(r, user, self.clock()), self._recorder("request.denied", user)
        )
        self.notifier.update_card(after)
        self.notifier.thread(after, blocks.denied_text(after))
        self.notifier.dm(after.requester, blocks.denied_text(after))

    def _approve_extension(self, user: str, request: AccessRequest) -> None:
        pending = request.extension

        def record(_: AccessRequest, after: AccessRequest) -> None:
            self.rt.audit.request_event(
                "extension.approved",
                after,
                actor=user,
                extra_seconds=pending.duration_seconds if pending else None,
                done=after.extension is None,
            )

        _, after = self.rt.store.transition(
            request.id, lambda r: requests.approve_extension(r, user, self.clock()), record
        )
        decided = after.extensions[-1] if after.extension is None else None
        if decided is not None:
            # If this is lost, the sweep sees the markers behind Redis's end and moves them.
            enqueue(self.rt.queue, "extend_access", after.id, job_id=f"extend-{after.id}-{len(after.extensions)}")
        self.notifier.update_extension_card(after, decided or after.extension)
        self.notifier.thread(after, blocks.extension_approval_text(after, user, decided is not None))

    def _deny_extension(self, user: str, request: AccessRequest) -> None:
        _, after = self.rt.store.transition(
            request.id,
            lambda r: requests.deny_extension(r, user, self.clock()),
            self._recorder("extension.denied", user),
        )
        self.notifier.update_extension_card(after, after.extensions[-1])
        text = blocks.extension_denied_text(after, user)
        self.notifier.thread(after, text)
        self.notifier.dm(after.requester, text)

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
