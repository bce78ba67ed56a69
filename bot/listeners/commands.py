"""The `/jit` slash command: ack with the answer within Slack's 3 seconds, then post what follows."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.service import AccessService

# Posting cards to Slack (with its retries on 429) runs here, so it never delays the next command's answer.
_FOLLOW_UPS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="jit-slack")


def register(app: AsyncApp, service: AccessService) -> None:
    async def handle_command_jit(ack: AsyncAck, command: dict[str, Any]) -> None:
        reply = await asyncio.to_thread(
            service.command, str(command.get("user_id", "")), str(command.get("text", "")), command.get("channel_id")
        )
        await ack(text=reply.text, response_type="ephemeral")
        if reply.then is not None:
            await asyncio.get_running_loop().run_in_executor(_FOLLOW_UPS, reply.then)

    app.command("/jit")(handle_command_jit)
