"""Buttons: Approve and Deny (on a card or the App Home), a break-glass grant's review, the App Home's End now,
Extend… and Cancel, the request modal's target select, and Request again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.slack import open_view, update_view
from bot.service.background import after_answer
from bot.service.decisions import Card, DecisionService
from bot.service.forms import FormService
from slack_out.ids import ActionId
from slack_out.views import View


def _user(body: dict[str, Any]) -> str:
    return str((body.get("user") or {}).get("id", ""))


def _card(body: dict[str, Any]) -> Card | None:
    """Where the clicked card is; None for a click on the App Home (a view, not a message)."""
    container = body.get("container") or {}
    if container.get("type") != "message":
        return None
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
    return str(channel), str(container.get("message_ts", ""))


def register(app: AsyncApp, decisions: DecisionService, forms: FormService) -> None:
    async def decide_or_ask(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient, verdict: ActionId
    ) -> None:
        """Approve or Deny: the form the target asks for first (a one-time code, a reason), else the decision."""
        await ack()
        user, value, card = _user(body), str(action.get("value", "")), _card(body)
        form = decisions.approve_form if verdict is ActionId.APPROVE else decisions.deny_form
        # The trigger is valid 3 seconds: a form is opened before anything else.
        view = await asyncio.to_thread(form, user, value, card)
        if view is not None:
            await open_view(client, body.get("trigger_id"), view)
        else:
            after_answer(decisions.decide, user, verdict, value, card)

    async def handle_action_approve(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await decide_or_ask(ack, body, action, client, ActionId.APPROVE)

    async def handle_action_deny(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await decide_or_ask(ack, body, action, client, ActionId.DENY)

    async def handle_action_review(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        after_answer(
            decisions.review, _user(body), str(action.get("action_id")), str(action.get("value", "")), _card(body)
        )

    async def handle_action_revoke(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        after_answer(forms.home_revoke, _user(body), str(action.get("value", "")))

    async def handle_action_cancel(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        after_answer(forms.home_cancel, _user(body), str(action.get("value", "")))

    def opening(form: Callable[[str, str], View | None]) -> Callable[..., Awaitable[None]]:
        """A handler for a button that opens the modal `form` makes of the person and the value (when it makes one)."""

        async def handle(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
            await ack()
            view = await asyncio.to_thread(form, _user(body), str(action.get("value", "")))
            if view is not None:
                await open_view(client, body.get("trigger_id"), view)

        return handle

    async def handle_action_target(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        view = body.get("view") or {}
        several = action.get("selected_options")
        selected = (
            ",".join(str(option.get("value")) for option in several if isinstance(option, dict))
            if isinstance(several, list)
            else (action.get("selected_option") or {}).get("value")
        )
        updated = await asyncio.to_thread(forms.request_view, _user(body), selected)
        await update_view(client, view.get("id"), view.get("hash"), updated)

    app.action(ActionId.APPROVE.value)(handle_action_approve)
    app.action(ActionId.DENY.value)(handle_action_deny)
    app.action(ActionId.REVOKE.value)(handle_action_revoke)
    app.action(ActionId.REVIEW_OK.value)(handle_action_review)
    app.action(ActionId.REVIEW_FLAG.value)(handle_action_review)
    app.action(ActionId.CANCEL.value)(handle_action_cancel)
    app.action(ActionId.EXTEND.value)(opening(forms.extend_view))
    app.action(ActionId.TARGET.value)(handle_action_target)
    app.action(ActionId.REREQUEST.value)(opening(forms.rerequest_view))
