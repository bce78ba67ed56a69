"""What Bolt reads from the bodies the HTTP edge hands it: the same fields Slack sent."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.http import _for_bolt

FORM = "application/x-www-form-urlencoded"
COMMAND = {"command": "/jit", "user_id": "U0DEV1", "text": "request lb-prod 30m bad payload from eu-west"}
ACTION = {"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "jit_approve", "value": "payload"}]}


def bolt_reads(body: str, content_type: str) -> dict[str, Any]:
    request = AsyncBoltRequest(body=_for_bolt(body, content_type), headers={"content-type": [content_type]})
    return dict(request.body)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (urllib.parse.urlencode(COMMAND), FORM, COMMAND),
        (
            urllib.parse.urlencode({**COMMAND, "text": "request lb-prod 30m payloads payload"}),
            FORM,
            {**COMMAND, "text": "request lb-prod 30m payloads payload"},
        ),
        (urllib.parse.urlencode({"payload": json.dumps(ACTION)}), FORM, ACTION),
        (urllib.parse.urlencode({"team_id": "T1", "payload": json.dumps(ACTION)}), FORM, ACTION),
        (
            json.dumps({"type": "event_callback", "note": "payload"}),
            "application/json",
            {"type": "event_callback", "note": "payload"},
        ),
    ],
)
def test_bolt_reads_what_slack_sent(body: str, content_type: str, expected: dict[str, Any]) -> None:
    assert bolt_reads(body, content_type) == expected


def test_without_the_edge_bolt_loses_a_command_that_says_payload() -> None:
    """The reason for _for_bolt: Bolt alone reads this command as an empty body."""
    body = urllib.parse.urlencode(COMMAND)
    assert dict(AsyncBoltRequest(body=body, headers={"content-type": [FORM]}).body) == {}
