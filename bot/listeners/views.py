"""Modal submissions (request, deny, extend), the `jit_request` shortcut, and the App Home's `app_home_opened`."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.slack import open_view
from bot.service.background import after_answer
from bot.service.decisions import DecisionService
from bot.service.forms import FormService
from slack_out.ids import CallbackId
from slack_out.views import field_values


def _user(body: dict[str, Any]) -> str:
    return str((body.get("user") or {}).get("id", ""))


async def _answer(ack: AsyncAck, answer: dict[str, Any] | None) -> None:
    """A submission's answer: close it (None), errors by block, or the step-up modal in its place."""
    if answer is None:
        await ack()
    elif answer.get("type") == "modal":
        await ack(response_action="update", view=answer)  # the target requires a one-time code first
    else:
        await ack(response_action="errors", errors=answer)


def register(app: AsyncApp, decisions: DecisionService, forms: FormService) -> None:
    async def handle_shortcut_request(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        view = await asyncio.to_thread(forms.request_view, _user(body))
        await open_view(client, body.get("trigger_id"), view)

    async def handle_view_request(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        answer = await forms.submit_request(_user(body), field_values(view.get("state") or {}))
        await _answer(ack, answer)

    async def handle_view_mfa(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        code = field_values(view.get("state") or {}).get("code", "")
        errors = await forms.submit_code(_user(body), str(view.get("private_metadata", "")), code)
        await (ack(response_action="errors", errors=errors) if errors else ack())

    async def handle_view_deny(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        errors, order = await asyncio.to_thread(
            decisions.check_deny,
            _user(body),
            str(view.get("private_metadata", "")),
            field_values(view.get("state") or {}),
        )
        if order is None:
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        after_answer(decisions.deny, _user(body), order)

    async def handle_view_extend(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        errors = await asyncio.to_thread(
            forms.submit_extend,
            _user(body),
            str(view.get("private_metadata", "")),
            field_values(view.get("state") or {}),
        )
        await (ack(response_action="errors", errors=errors) if errors else ack())

    async def handle_event_home(body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            after_answer(forms.home_opened, str(event.get("user", "")), body.get("event_id"))

    app.shortcut(CallbackId.REQUEST.value)(handle_shortcut_request)
    app.view(CallbackId.REQUEST.value)(handle_view_request)
    app.view(CallbackId.DENY.value)(handle_view_deny)
    app.view(CallbackId.EXTEND.value)(handle_view_extend)
    app.view(CallbackId.MFA.value)(handle_view_mfa)
    app.event("app_home_opened")(handle_event_home)
