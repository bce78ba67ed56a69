"""The `/jit` slash command: answered within Slack's 3 seconds; whatever follows is a worker's."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.service.commands import CommandService


def register(app: AsyncApp, service: CommandService) -> None:
    async def handle_command_jit(ack: AsyncAck, command: dict[str, Any]) -> None:
        reply = await service.command(
            str(command.get("user_id", "")), str(command.get("text", "")), command.get("channel_id")
        )
        await ack(text=reply.text, response_type="ephemeral")

    app.command("/jit")(handle_command_jit)
