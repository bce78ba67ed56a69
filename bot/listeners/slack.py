"""Opening and updating views from a listener: a trigger Slack refuses (expired, reused) is logged, never a 500."""

from __future__ import annotations

from typing import Any

import structlog
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

log = structlog.get_logger("jit_lb.web")


async def open_view(client: AsyncWebClient, trigger_id: Any, view: dict[str, Any]) -> bool:
    """views.open; False (logged) when Slack refuses it: the person clicks again."""
    try:
        await client.views_open(trigger_id=str(trigger_id or ""), view=view)
    except (SlackApiError, SlackClientError, OSError) as err:
        log.warning("a view could not be opened", callback_id=view.get("callback_id"), error=str(err))
        return False
    return True


async def update_view(client: AsyncWebClient, view_id: Any, view_hash: Any, view: dict[str, Any]) -> bool:
    """views.update of an open modal, guarded by its hash; False (logged) when Slack refuses it."""
    try:
        await client.views_update(view_id=str(view_id or ""), hash=view_hash, view=view)
    except (SlackApiError, SlackClientError, OSError) as err:
        log.warning("a view could not be updated", callback_id=view.get("callback_id"), error=str(err))
        return False
    return True
