"""The `/jit` slash command: answered within Slack's 3 seconds; with no text, it opens the request modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.slack import open_view
from bot.service.background import after_answer
from bot.service.commands import CommandService


def register(app: AsyncApp, service: CommandService) -> None:
    async def handle_command_jit(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        reply = await service.command(
            str(command.get("user_id", "")), str(command.get("text", "")), command.get("channel_id")
        )
        if reply.view is not None:
            opened = await open_view(client, command.get("trigger_id"), reply.view)
            if not opened:
                await ack(text="Slack would not open the form just now; try the command again.")
                return
            await (ack(text=reply.text, response_type="ephemeral") if reply.text else ack())
        else:
            await ack(text=reply.text, response_type="ephemeral")
        if reply.then is not None:
            after_answer(reply.then)

    app.command("/jit")(handle_command_jit)
