"""The `/jit` slash command: answered within Slack's 3 seconds; with no text, it opens the request modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.service.commands import CommandService


def register(app: AsyncApp, service: CommandService) -> None:
    async def handle_command_jit(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        reply = await service.command(
            str(command.get("user_id", "")), str(command.get("text", "")), command.get("channel_id")
        )
        if reply.view is not None:
            await client.views_open(trigger_id=command["trigger_id"], view=reply.view)
            await ack()
            return
        await ack(text=reply.text, response_type="ephemeral")

    app.command("/jit")(handle_command_jit)
