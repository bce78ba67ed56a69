"""The `/jit` slash command: ack with the answer within Slack's 3 seconds, then post what follows."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.listeners.background import after_answer
from bot.service import AccessService


def register(app: AsyncApp, service: AccessService) -> None:
    async def handle_command_jit(ack: AsyncAck, command: dict[str, Any]) -> None:
        reply = await service.command_async(
            str(command.get("user_id", "")), str(command.get("text", "")), command.get("channel_id")
        )
        await ack(text=reply.text, response_type="ephemeral")
        if reply.then is not None:
            after_answer(reply.then)

    app.command("/jit")(handle_command_jit)
