"""The Approve and Deny buttons of an approval card."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.listeners.background import after_answer
from bot.messages.ids import ActionId
from bot.service.decisions import DecisionService


def register(app: AsyncApp, service: DecisionService) -> None:
    async def handle_action_decision(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
        user = (body.get("user") or {}).get("id")
        if not user:
            return  # not something Slack sends; the HTTP edge already answers such bodies with 400
        after_answer(
            service.decide,
            user,
            action["action_id"],
            str(action.get("value", "")),
            channel,
            container.get("message_ts", ""),
        )

    app.action(ActionId.APPROVE.value)(handle_action_decision)
    app.action(ActionId.DENY.value)(handle_action_decision)
